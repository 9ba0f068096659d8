//! HTTP forward-auth (`/v1/forwardAuth`, any method): nginx's `auth_request`, Traefik's
//! `ForwardAuth`, Caddy's `forward_auth`, Ingress-NGINX's `auth-url`. The proxy sends the
//! client's headers and names the original request in `X-Forwarded-Method`/`-Uri`/`-Host`
//! (Traefik, Caddy) or `X-Original-Method`/`-URI` (nginx); 200 admits, with the upstream
//! headers on the response for the proxy to copy.

use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{Edge, Proxied, body};

/// Reads one of a proxy's descriptions of the request, which comes in two families; a
/// request naming both with different values is refused, so a client cannot slip in the
/// family its proxy does not set. The error is the refusal's message.
fn forwarded<'a>(headers: &'a HeaderMap, first: &str, second: &str) -> Result<Option<&'a str>, &'static str> {
    let read =
        |name: &str| headers.get(name).map(|value| value.to_str().map_err(|_| "a forwarded header is not ASCII"));
    match (read(first).transpose()?, read(second).transpose()?) {
        (Some(one), Some(other)) if one != other => {
            Err("X-Forwarded-* and X-Original-* name different requests; the proxy must set one family")
        }
        (one, other) => Ok(one.or(other)),
    }
}

fn bad_request(message: &'static str) -> Response {
    let body = serde_json::json!({ "code": "BAD_FORWARDED_REQUEST", "message": message }).to_string();
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Answers one forward-auth request.
pub(crate) async fn answer(edge: &Edge, headers: &HeaderMap) -> Response {
    let described = forwarded(headers, "x-forwarded-method", "x-original-method").and_then(|method| {
        let uri = forwarded(headers, "x-forwarded-uri", "x-original-uri")?;
        let host = forwarded(headers, "x-forwarded-host", "x-original-host")?;
        Ok((method, uri, host))
    });
    let (method, path, host) = match described {
        Ok((Some(method), Some(path), host)) => (method, path, host),
        Ok(_) => {
            return bad_request(
                "name the original request in X-Forwarded-Method and X-Forwarded-Uri (or X-Original-Method and X-Original-URI)",
            );
        }
        Err(message) => return bad_request(message),
    };
    let host = host.or_else(|| headers.get(header::HOST).and_then(|value| value.to_str().ok())).unwrap_or_default();
    let read = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let decision = edge.check(Proxied { method, host, path }, read).await;
    let answer = decision.answer;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if answer.admits() {
        let mut response = status.into_response();
        for (name, value) in decision.upstream {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name.as_ref()), HeaderValue::try_from(value.as_bytes()))
            {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body(answer)).into_response();
    let out = response.headers_mut();
    // The code in a header too: nginx cannot pass a sub-request's body on, only its headers.
    out.insert("x-keyward-code", HeaderValue::from_static(answer.code));
    if answer.status == 401 {
        out.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(seconds) = decision.retry_after {
        out.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_named_twice_differently_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("x-original-uri", HeaderValue::from_static("/private"));
        assert_eq!(forwarded(&headers, "x-forwarded-uri", "x-original-uri").ok().flatten(), Some("/private"));
        headers.insert("x-forwarded-uri", HeaderValue::from_static("/private"));
        assert_eq!(forwarded(&headers, "x-forwarded-uri", "x-original-uri").ok().flatten(), Some("/private"));
        headers.insert("x-forwarded-uri", HeaderValue::from_static("/public"));
        let refused = forwarded(&headers, "x-forwarded-uri", "x-original-uri").expect_err("two requests");
        assert!(refused.contains("different requests"), "{refused}");
    }
}
