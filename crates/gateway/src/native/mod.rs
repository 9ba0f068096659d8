//! The native API over HTTP: every `google.api.http` rule of the descriptor set, served
//! with the proto3 JSON mapping. Rules are read at start from the descriptor, so a new
//! RPC with a rule is served without a line here.
//!
//! Paths are matched here rather than by axum's router: AIP custom verbs
//! (`/v1/apiKeys/{id}:rotate`) put a variable and a literal in one segment, which axum's
//! matcher refuses.

mod codec;
pub(crate) mod error;

use std::{str::FromStr, sync::Arc};

use axum::{
    Router,
    extract::{State, rejection::BytesRejection},
    response::{IntoResponse, Response},
    routing::any,
};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, uri::PathAndQuery};
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
    Value as ReflectValue,
};
use serde_json::{Map, Value};

use crate::{Failure, Upstream, upstream};

/// One `google.api.http` binding of an RPC.
#[derive(Debug, Clone)]
pub struct Rule {
    /// HTTP method.
    pub method: Method,
    /// The path template as written in the proto, e.g. `/v1/apiKeys/{id}:rotate`.
    pub template: String,
    /// `*`, a field name, or empty: where the request body goes.
    pub body: String,
    /// The field of the response that is the HTTP body; empty for the whole response.
    pub response_body: String,
    /// `/package.Service/Method`.
    pub grpc_path: String,
    /// The request message.
    pub input: MessageDescriptor,
    /// The response message.
    pub output: MessageDescriptor,
    segments: Vec<Segment>,
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// A variable of one segment (`{id}`, `{id=*}`).
    Variable(String),
    /// A variable of the rest of the path (`{name=**}`).
    Rest(String),
}

impl Rule {
    fn parse(
        method: Method,
        template: &str,
        rule: &DynamicMessage,
        grpc_path: String,
        rpc: &prost_reflect::MethodDescriptor,
    ) -> Option<Self> {
        let text =
            |name: &str| rule.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let path = template.strip_prefix('/')?;
        // The verb follows the last ':' of the last segment (after any `}`).
        let last_slash = path.rfind('/').map_or(0, |at| at + 1);
        let last_brace = path.rfind('}').map_or(0, |at| at + 1);
        let (path, verb) = match path[last_slash.max(last_brace)..].rfind(':') {
            Some(at) => {
                let at = last_slash.max(last_brace) + at;
                (&path[..at], Some(path[at + 1..].to_owned()))
            }
            None => (path, None),
        };
        let segments = path
            .split('/')
            .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(variable) => match variable.split_once('=') {
                    Some((field, "**")) => Segment::Rest(field.to_owned()),
                    Some((field, _)) => Segment::Variable(field.to_owned()),
                    None => Segment::Variable(variable.to_owned()),
                },
                None => Segment::Literal(segment.to_owned()),
            })
            .collect();
        Some(Self {
            method,
            template: template.to_owned(),
            body: text("body"),
            response_body: text("response_body"),
            grpc_path,
            input: rpc.input(),
            output: rpc.output(),
            segments,
            verb,
        })
    }

    /// The path variables of `path` when it fits the template.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').collect();
        let mut variables = Vec::new();
        let mut at = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(at) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Variable(field) => {
                    let value = parts.get(at).filter(|v| !v.is_empty())?;
                    variables.push((field.clone(), percent_decode(value)?));
                }
                Segment::Rest(field) => {
                    let rest = parts.get(at..)?.join("/");
                    variables.push((field.clone(), percent_decode(&rest)?));
                    return Some(variables);
                }
            }
            at += 1;
        }
        (at == parts.len()).then_some(variables)
    }

    /// The template in OpenAPI's form: each variable named by its last field name (so
    /// `{api_key.id}` and `{id}` make one path), the verb kept.
    pub fn openapi_path(&self) -> String {
        let mut path = String::new();
        for segment in &self.segments {
            path.push('/');
            match segment {
                Segment::Literal(literal) => path.push_str(literal),
                Segment::Variable(field) | Segment::Rest(field) => {
                    path.push('{');
                    path.push_str(short_name(field));
                    path.push('}');
                }
            }
        }
        if let Some(verb) = &self.verb {
            path.push(':');
            path.push_str(verb);
        }
        path
    }

    /// The path variables' field names.
    pub fn variables(&self) -> Vec<String> {
        self.segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Variable(field) | Segment::Rest(field) => Some(field.clone()),
                Segment::Literal(_) => None,
            })
            .collect()
    }
}

/// The last field name of a dotted path.
pub fn short_name(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `google.api.http` rules of every service in `keyward.v1`, additional bindings included.
pub fn rules(pool: &DescriptorPool) -> Vec<Rule> {
    let Some(http) = pool.get_extension_by_name("google.api.http") else { return vec![] };
    let mut rules = Vec::new();
    for service in pool.services().filter(|service| service.package_name() == "keyward.v1") {
        for rpc in service.methods() {
            let options = rpc.options();
            if !options.has_extension(&http) {
                continue;
            }
            let ReflectValue::Message(rule) = options.get_extension(&http).into_owned() else { continue };
            let grpc_path = format!("/{}/{}", service.full_name(), rpc.name());
            let mut bindings = vec![rule.clone()];
            if let Some(ReflectValue::List(more)) =
                rule.get_field_by_name("additional_bindings").map(|v| v.into_owned())
            {
                bindings.extend(more.iter().filter_map(|v| v.as_message().cloned()));
            }
            for binding in bindings {
                for (name, method) in [
                    ("get", Method::GET),
                    ("put", Method::PUT),
                    ("post", Method::POST),
                    ("delete", Method::DELETE),
                    ("patch", Method::PATCH),
                ] {
                    let template = binding.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned));
                    if let Some(template) = template.filter(|t| !t.is_empty())
                        && let Some(rule) = Rule::parse(method, &template, &binding, grpc_path.clone(), &rpc)
                    {
                        rules.push(rule);
                    }
                }
            }
        }
    }
    // Verbs first, so `/v1/apiKeys:verify` is not taken for a key id.
    rules.sort_by_key(|rule| rule.verb.is_none());
    rules
}

/// The native API's rules and the upstream they call.
#[derive(Debug, Clone)]
pub struct Native {
    rules: Arc<Vec<Rule>>,
    upstream: Upstream,
}

impl Native {
    /// The rules of keyward's descriptor set, over `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        let pool = DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into keyward-proto decodes");
        Self { rules: Arc::new(rules(&pool)), upstream }
    }

    /// The rules served.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// One catch-all route per first path segment of the rules (`/v1/...`).
    pub(crate) fn routes(self) -> Router {
        let mut prefixes: Vec<String> = self
            .rules
            .iter()
            .filter_map(|rule| rule.template.split('/').nth(1).map(|s| s.split(':').next().unwrap_or(s).to_owned()))
            .collect();
        prefixes.sort();
        prefixes.dedup();
        let state = Arc::new(self);
        let mut router = Router::new();
        for prefix in prefixes {
            router =
                router.route(&format!("/{prefix}/{{*rest}}"), any(handle)).route(&format!("/{prefix}"), any(handle));
        }
        router.with_state(state)
    }

    async fn call(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Response, Failure> {
        let body = body?;
        let path = uri.path();
        let mut fits_path = false;
        let mut found = None;
        for rule in self.rules.iter() {
            if let Some(variables) = rule.matches(path) {
                fits_path = true;
                if rule.method == *method {
                    found = Some((rule, variables));
                    break;
                }
            }
        }
        let Some((rule, variables)) = found else {
            return Err(if fits_path { Failure::MethodNotAllowed } else { Failure::NoRoute });
        };
        let message = request_message(rule, &variables, uri.query().unwrap_or_default(), &body)?;
        let grpc_path = PathAndQuery::from_str(&rule.grpc_path)
            .map_err(|err| Failure::Status(tonic::Status::internal(err.to_string())))?;
        let mut grpc = tonic::client::Grpc::new(self.upstream.clone());
        grpc.ready().await.map_err(|err| {
            Failure::Status(tonic::Status::unavailable(format!("the keyward API is unavailable: {err}")))
        })?;
        let response = grpc
            .unary(upstream::request(headers, message), grpc_path, codec::DynamicCodec { output: rule.output.clone() })
            .await?
            .into_inner();
        let response = if rule.response_body.is_empty() {
            serialize(&response)
        } else {
            let field = rule.output.get_field_by_name(&rule.response_body);
            match field {
                Some(field) => serialize_value(&response, &field),
                None => serialize(&response),
            }
        }?;
        Ok((StatusCode::OK, axum::Json(response)).into_response())
    }
}

async fn handle(
    State(native): State<Arc<Native>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    native.call(&method, &uri, &headers, body).await.unwrap_or_else(error::respond)
}

fn serialize(message: &DynamicMessage) -> Result<Value, Failure> {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|err| Failure::Status(tonic::Status::internal(format!("rendering the response: {err}"))))
}

fn serialize_value(message: &DynamicMessage, field: &FieldDescriptor) -> Result<Value, Failure> {
    match message.get_field(field).as_message() {
        Some(inner) => serialize(inner),
        None => serialize(message),
    }
}

/// The request message from the body, the path variables and the query, in that order of
/// precedence reversed: path variables win over the query, both over the body.
fn request_message(
    rule: &Rule,
    variables: &[(String, String)],
    query: &str,
    body: &[u8],
) -> Result<DynamicMessage, Failure> {
    let parsed_body = || -> Result<Value, Failure> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(body).map_err(|err| Failure::BadRequest(format!("invalid JSON body: {err}")))
    };
    let mut json = match rule.body.as_str() {
        "" => Map::new(),
        "*" => {
            let Value::Object(map) = parsed_body()? else {
                return Err(Failure::BadRequest(format!(
                    "the body must be a JSON object ({})",
                    rule.input.full_name()
                )));
            };
            map
        }
        field => {
            let mut map = Map::new();
            map.insert(field.to_owned(), parsed_body()?);
            map
        }
    };
    // With body "*" every field comes from the body; grpc-gateway ignores the query then.
    if rule.body != "*" {
        for (name, value) in form_pairs(query) {
            let field = field_path(&rule.input, &name)?;
            let value = typed(
                field.last().ok_or_else(|| Failure::BadRequest(format!("unknown query parameter {name}")))?,
                &value,
            )?;
            insert(&mut json, &field, value, true)?;
        }
    }
    for (name, value) in variables {
        let field = field_path(&rule.input, name)?;
        let value =
            typed(field.last().ok_or_else(|| Failure::BadRequest(format!("unknown path variable {name}")))?, value)?;
        insert(&mut json, &field, value, false)?;
    }
    DynamicMessage::deserialize_with_options(rule.input.clone(), Value::Object(json), &DeserializeOptions::new())
        .map_err(|err| Failure::BadRequest(format!("invalid {}: {err}", rule.input.full_name())))
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| percent_decode(&text.replace('+', " "));
            Some((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The fields a dotted path names, from the message down.
fn field_path(message: &MessageDescriptor, path: &str) -> Result<Vec<FieldDescriptor>, Failure> {
    let mut fields = Vec::new();
    let mut current = message.clone();
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))
            .ok_or_else(|| Failure::BadRequest(format!("{} has no field {path}", message.full_name())))?;
        if names.peek().is_some() {
            let Kind::Message(inner) = field.kind() else {
                return Err(Failure::BadRequest(format!("{path} does not name a field of {}", message.full_name())));
            };
            if field.is_list() || field.is_map() {
                return Err(Failure::BadRequest(format!("{path} does not name a field of {}", message.full_name())));
            }
            current = inner;
        }
        fields.push(field);
    }
    Ok(fields)
}

/// A path or query value as the JSON the field's type takes.
fn typed(field: &FieldDescriptor, raw: &str) -> Result<Value, Failure> {
    if field.is_map() {
        return Err(Failure::BadRequest(format!("{} cannot be given in the path or query", field.name())));
    }
    match field.kind() {
        Kind::Bool => match raw {
            "true" | "1" | "" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(Failure::BadRequest(format!("{} must be true or false", field.name()))),
        },
        // Proto3 JSON takes numbers, enums and well-known types as strings too.
        Kind::Double
        | Kind::Float
        | Kind::Int32
        | Kind::Int64
        | Kind::Uint32
        | Kind::Uint64
        | Kind::Sint32
        | Kind::Sint64
        | Kind::Fixed32
        | Kind::Fixed64
        | Kind::Sfixed32
        | Kind::Sfixed64
        | Kind::String
        | Kind::Bytes
        | Kind::Enum(_)
        | Kind::Message(_) => Ok(Value::String(raw.to_owned())),
    }
}

fn insert(json: &mut Map<String, Value>, path: &[FieldDescriptor], value: Value, append: bool) -> Result<(), Failure> {
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut map = json;
    for parent in parents {
        // A JSON name and a proto name may both be present: use the proto name throughout.
        if let Some(existing) = map.remove(parent.json_name()) {
            map.insert(parent.name().to_owned(), existing);
        }
        let entry = map.entry(parent.name().to_owned()).or_insert_with(|| Value::Object(Map::new()));
        map =
            entry.as_object_mut().ok_or_else(|| Failure::BadRequest(format!("{} must be an object", parent.name())))?;
    }
    map.remove(last.json_name());
    if last.is_list() {
        let entry = map.entry(last.name().to_owned()).or_insert_with(|| Value::Array(vec![]));
        match entry.as_array_mut() {
            Some(items) if append => items.push(value),
            Some(_) | None => *entry = Value::Array(vec![value]),
        }
    } else {
        map.insert(last.name().to_owned(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn templates_match_with_verbs() {
        let rules = rules(&pool());
        let find = |method: Method, path: &str| {
            rules
                .iter()
                .find(|r| r.method == method && r.matches(path).is_some())
                .map(|r| (r.grpc_path.clone(), r.matches(path).unwrap()))
        };
        let (rpc, vars) = find(Method::POST, "/v1/apiKeys/abc:rotate").unwrap();
        assert_eq!(rpc, "/keyward.v1.ApiKeyService/RotateApiKey");
        assert_eq!(vars, vec![("id".to_owned(), "abc".to_owned())]);
        assert_eq!(find(Method::POST, "/v1/apiKeys:verify").unwrap().0, "/keyward.v1.ApiKeyService/VerifyApiKey");
        assert_eq!(find(Method::POST, "/v1/apiKeys").unwrap().0, "/keyward.v1.ApiKeyService/CreateApiKey");
        let (rpc, vars) = find(Method::PATCH, "/v1/apiKeys/a%2Fb").unwrap();
        assert_eq!(rpc, "/keyward.v1.ApiKeyService/UpdateApiKey");
        assert_eq!(vars, vec![("api_key.id".to_owned(), "a/b".to_owned())]);
        assert!(find(Method::GET, "/v1/apiKeys/a/b").is_none());
    }

    #[test]
    fn requests_merge_body_path_and_query() {
        let rules = rules(&pool());
        let update = rules.iter().find(|r| r.grpc_path.ends_with("/UpdateApiKey")).unwrap();
        let message = request_message(
            update,
            &[("api_key.id".into(), "k1".into())],
            "update_mask=status&request_id=r",
            br#"{"status":"API_KEY_STATUS_INACTIVE","name":"n"}"#,
        )
        .unwrap();
        let json = serialize(&message).unwrap();
        assert_eq!(json["apiKey"]["id"], "k1");
        assert_eq!(json["apiKey"]["status"], "API_KEY_STATUS_INACTIVE");
        assert_eq!(json["updateMask"], "status");
        assert_eq!(json["requestId"], "r");
        let list = rules.iter().find(|r| r.grpc_path.ends_with("/ListApiKeys")).unwrap();
        let message =
            request_message(list, &[], "pageSize=5&show_revoked=true&status=API_KEY_STATUS_ACTIVE", b"").unwrap();
        let json = serialize(&message).unwrap();
        assert_eq!((json["pageSize"].clone(), json["showRevoked"].clone()), (5.into(), true.into()));
        assert!(request_message(list, &[], "page_size=many", b"").is_err());
        assert!(request_message(list, &[], "nope=1", b"").is_err());
        assert!(request_message(list, &[], "status=NOPE", b"").is_err());
    }
}
