//! Reading Masumi's requests and writing its answers: the JSON body and the query, a
//! problem naming the Masumi field, and the success envelope.

use super::*;

/// The JSON body as `T` (an empty body counts as `{}`); a problem names the Masumi field.
pub(crate) fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let body = body?;
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            Failure::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            Failure::BadRequest(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|err| Failure::BadRequest(format!("invalid JSON body: {err}")))?;
    Ok(value)
}

pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    query.map(|Query(q)| q).map_err(|err| Failure::BadRequest(format!("invalid query: {}", err.body_text())))
}

/// The answer to a request with `headers`: `result` in the envelope, or Masumi's error.
pub(crate) fn success<T: Serialize>(headers: &HeaderMap, result: Result<T, Failure>) -> Response {
    match result {
        Ok(data) => (StatusCode::OK, Json(Success { status: "success".to_owned(), data })).into_response(),
        Err(failure) => error::respond_to(headers, failure),
    }
}
