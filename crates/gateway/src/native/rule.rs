//! The `google.api.http` rules of the descriptor set: their path templates, parsed once,
//! and matching a request's method and path to the rule that serves it.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value as ReflectValue};

use crate::Failure;

/// A path's variables: each field path with its decoded value, in the template's order.
pub(super) type Variables = Vec<(String, String)>;

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
    pub(super) fn matches(&self, path: &str) -> Option<Variables> {
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

/// `%XX` escapes decoded; `None` when one is malformed or the result is not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
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

/// The rule `method` and `path` call, and the path's variables; a path that some rule
/// fits but not with this method is answered 405, not 404.
pub(super) fn route<'r>(rules: &'r [Rule], method: &Method, path: &str) -> Result<(&'r Rule, Variables), Failure> {
    let mut fits_path = false;
    for rule in candidates(rules, path) {
        if let Some(variables) = rule.matches(path) {
            fits_path = true;
            if rule.method == *method {
                return Ok((rule, variables));
            }
        }
    }
    Err(if fits_path { Failure::MethodNotAllowed } else { Failure::NoRoute })
}

/// The rules that may serve `path`: those with its custom verb when some rule with that
/// verb fits it, so that `/x/{id}:verb` is never the id `{id}:verb` of a rule without one.
fn candidates<'r>(rules: &'r [Rule], path: &str) -> impl Iterator<Item = &'r Rule> {
    let verbed = rules.iter().any(|rule| rule.verb.is_some() && rule.matches(path).is_some());
    rules.iter().filter(move |rule| !verbed || rule.verb.is_some())
}

/// The methods some rule takes `path` with, for a 405's `Allow`.
pub(super) fn allowed(rules: &[Rule], path: &str) -> http::HeaderValue {
    let mut methods: Vec<&str> =
        candidates(rules, path).filter(|rule| rule.matches(path).is_some()).map(|rule| rule.method.as_str()).collect();
    methods.sort_unstable();
    methods.dedup();
    http::HeaderValue::from_str(&methods.join(", ")).unwrap_or_else(|_| http::HeaderValue::from_static(""))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_with_verbs() {
        let rules = rules(&DescriptorPool::decode(keyward_proto::FILE_DESCRIPTOR_SET).unwrap());
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
}
