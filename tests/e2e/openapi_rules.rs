//! The OpenAPI document and the server agree on every field constraint. For each
//! constrained field of every native operation (body, query and path), values around the
//! document's bounds (lengths at and one past `minLength`/`maxLength`, `minimum`/`maximum`
//! and one past, list and map sizes, strings that do and do not match the `pattern`) are
//! judged by the document and then sent to a real server: a value the document refuses must
//! be refused with a `BadRequest` naming that field, a value it accepts must not be named.
//! A rule added to the server's checks but not to `contract.rs` (or the other way round)
//! fails here.

mod schema;

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use schema::*;

use crate::{
    gateway::Rest,
    helpers::{ADMIN_KEY, Backend},
};

/// Rules that relate one field to another, which the document cannot state on the field
/// (tests/schemathesis.toml lists them for the fuzzer too): the probe is left out.
const CROSS_FIELD: [(&str, &str); 2] = [
    // Exactly one of api_key_id and owner: an empty api_key_id is refused without an owner.
    ("CreditService_GetUsage", "api_key_id"),
    ("CreditService_ListCreditHolds", "api_key_id"),
];

/// Fields whose language no schema states (a scope query nests parentheses): the document
/// gives their length and alphabet, a superset. The server must refuse whatever the
/// document refuses; what the document accepts, the server may still refuse by grammar.
const GRAMMAR: [(&str, &str); 1] = [("ApiKeyService_VerifyApiKey", "scope_query")];

/// Fields whose accepted values depend on the server's state: a pool's balance stays
/// within 0 and 2^63 - 1 whatever delta the document allows (an owner's pool exists for
/// any owner, so no NOT_FOUND answers first, as it does for a key's AdjustCredits). So is a
/// request id: the probes send one example id, and once one change of a pool used it, the
/// other change of the same pool is refused it. The server must refuse whatever the
/// document refuses; what it accepts may still be refused.
const STATE: [(&str, &str); 3] = [
    ("CreditService_AdjustOwnerCredits", "deltas.delta"),
    ("CreditService_AdjustOwnerCredits", "request_id"),
    ("CreditService_UpdateOwnerCreditPool", "request_id"),
];

/// One step from a value to a part of it.
#[derive(Debug, Clone)]
enum Step {
    Property(String),
    Item,
    MapValue,
}

/// A constrained field: where it is, its proto path (as violations name it), its schema.
struct Probe {
    steps: Vec<Step>,
    field: String,
    schema: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_and_server_agree_on_every_constraint() {
    let app = crate::helpers::spawn(Backend::Sqlite).await;
    let rest = Rest::new(app.running().http_addr);
    let document = rest.send("GET", "/openapi.json", &[], None).await.body;
    let auth = format!("Bearer {ADMIN_KEY}");
    // The run's own key is never a path value: deleting or rotating it would end the run.
    let caller = rest.send("GET", "/v1/callerApiKey", &[("authorization", auth.as_str())], None).await.body;
    let own = [caller["apiKey"]["id"].clone(), caller["apiKey"]["number"].clone()].map(|v| scalar_text(&v));
    let mut disagreements = Vec::new();
    let (mut refused, mut accepted) = (0, 0);
    for (template, item) in document["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/") {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let operation_id = operation["operationId"].as_str().unwrap();
            let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            let body_schema = operation.pointer("/requestBody/content/application~1json/schema").cloned();
            let partial = parameters.iter().any(|p| p["name"] == "update_mask");
            let mut probes = Vec::new();
            if let Some(schema) = &body_schema {
                // The body of a partial update is the resource, its fields named from the request.
                let prefix = if partial { resource(operation_id) } else { String::new() };
                collect(schema, &mut Vec::new(), &prefix, &mut probes);
            }
            for parameter in &parameters {
                let name = parameter["name"].as_str().unwrap().to_owned();
                let field = match parameter["in"].as_str() {
                    Some("path") if partial => format!("{}.{name}", resource(operation_id)),
                    _ => name.clone(),
                };
                if constrained(&parameter["schema"]) && parameter["schema"]["type"] != "array" {
                    probes.push(Probe {
                        steps: vec![Step::Property(format!("{}:{name}", parameter["in"].as_str().unwrap()))],
                        field,
                        schema: parameter["schema"].clone(),
                    });
                }
            }
            for probe in probes.into_iter().filter(|p| !CROSS_FIELD.contains(&(operation_id, p.field.as_str()))) {
                for candidate in candidates(&probe.schema) {
                    let text = scalar_text(&candidate);
                    if template.contains('{') && own.iter().any(|own| text.trim_start_matches('0') == own) {
                        continue;
                    }
                    let valid = accepts(&probe.schema, &candidate);
                    let request = Request::build(template, &parameters, body_schema.as_ref(), &probe, &candidate);
                    let Some(request) = request else { continue };
                    let headers = [("authorization", auth.as_str())];
                    let answer =
                        rest.send(&method.to_uppercase(), &request.path, &headers, request.body.as_deref()).await;
                    let named = named(&answer.body, &probe.field);
                    // Refused by a check naming the field, or by the JSON reader before any
                    // check (a timestamp or duration not in its JSON form: no violations).
                    let refused_here = answer.status == 400 && (named || violations(&answer.body).is_empty());
                    if valid {
                        accepted += 1;
                    } else {
                        refused += 1;
                    }
                    let by_grammar = GRAMMAR.contains(&(operation_id, probe.field.as_str()))
                        || STATE.contains(&(operation_id, probe.field.as_str()));
                    if (valid == refused_here || (valid && named)) && !(valid && by_grammar) {
                        disagreements.push(format!(
                            "{operation_id} {} = {}: the document {} it, the server answered {} {}",
                            probe.field,
                            shorten(&candidate),
                            if valid { "accepts" } else { "refuses" },
                            answer.status,
                            shorten(&Value::Array(violations(&answer.body)))
                        ));
                    }
                }
            }
        }
    }
    app.stop().await;
    assert!(disagreements.is_empty(), "{} disagreements:\n{}", disagreements.len(), disagreements.join("\n"));
    // Enough of the document was exercised for the agreement to mean something.
    assert!(refused > 300 && accepted > 300, "only {refused} refused and {accepted} accepted values sent");
}

/// The request field a partial update's body is: `api_key` of `ApiKeyService_UpdateApiKey`.
fn resource(operation_id: &str) -> String {
    let method = operation_id.rsplit('_').next().unwrap_or_default();
    snake(method.trim_start_matches("Update")).trim_start_matches('_').to_owned()
}

/// A request ready to send.
struct Request {
    path: String,
    body: Option<String>,
}

impl Request {
    /// The operation's smallest valid request with `value` at the probe's place; `None`
    /// when the value cannot travel there (an empty or oversized path segment).
    fn build(
        template: &str,
        parameters: &[Value],
        body_schema: Option<&Value>,
        probe: &Probe,
        value: &Value,
    ) -> Option<Self> {
        let place = match &probe.steps[..] {
            [Step::Property(name)] if name.contains(':') => Some(name.clone()),
            _ => None,
        };
        let mut path = template.to_owned();
        let mut query = Vec::new();
        for parameter in parameters {
            let name = parameter["name"].as_str().unwrap();
            let at = parameter["in"].as_str().unwrap();
            let mine = place.as_deref() == Some(&format!("{at}:{name}"));
            let text = if mine {
                scalar_text(value)
            } else if name == "update_mask" && place.is_none() {
                // A partial update checks the fields its mask names: name the probed one (a
                // field no mask may name is never read).
                let first =
                    probe.steps.iter().find_map(|s| if let Step::Property(p) = s { Some(p.clone()) } else { None });
                let mask = first.unwrap_or_default();
                if !accepts(&parameter["schema"], &json!(mask)) {
                    return None;
                }
                mask
            } else if parameter["required"] == true || at == "path" {
                scalar_text(&minimal(&parameter["schema"]))
            } else {
                continue;
            };
            if at == "path" {
                if text.is_empty() || text.len() > 2_000 {
                    return None;
                }
                let variable = path.split('{').nth(1)?.split('}').next()?.to_owned();
                path = path.replacen(&format!("{{{variable}}}"), &encode(&text), 1);
            } else {
                query.push(format!("{name}={}", encode(&text)));
            }
        }
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let body = body_schema.map(|schema| {
            let mut body = minimal(schema);
            if place.is_none() {
                put(&mut body, schema, &probe.steps, value.clone());
            }
            body.to_string()
        });
        Some(Self { path, body })
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_)) => {
            other.to_string()
        }
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sets `value` at `steps` of `target`, making what is missing on the way.
fn put(target: &mut Value, schema: &Value, steps: &[Step], value: Value) {
    let Some((step, rest)) = steps.split_first() else {
        *target = value;
        return;
    };
    match step {
        Step::Property(name) => {
            let inner = &schema["properties"][name];
            if !target.is_object() {
                *target = json!({});
            }
            let slot = target.as_object_mut().unwrap().entry(name.clone()).or_insert_with(|| minimal(inner));
            put(slot, inner, rest, value);
        }
        Step::Item => {
            let inner = &schema["items"];
            *target = json!([minimal(inner)]);
            put(&mut target[0], inner, rest, value);
        }
        Step::MapValue => {
            let inner = &schema["additionalProperties"];
            *target = json!({"k": minimal(inner)});
            put(&mut target["k"], inner, rest, value);
        }
    }
}

/// Every constrained field below `schema`, at `steps`, its proto path starting at `prefix`.
fn collect(schema: &Value, steps: &mut Vec<Step>, prefix: &str, probes: &mut Vec<Probe>) {
    if !steps.is_empty() && constrained(schema) {
        probes.push(Probe { steps: steps.clone(), field: prefix.to_owned(), schema: schema.clone() });
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, inner) in properties {
            let field = if prefix.is_empty() { snake(name) } else { format!("{prefix}.{}", snake(name)) };
            steps.push(Step::Property(name.clone()));
            collect(inner, steps, &field, probes);
            steps.pop();
        }
    }
    for (keyword, step) in [("items", Step::Item), ("additionalProperties", Step::MapValue)] {
        if schema[keyword].is_object() && schema[keyword] != json!({}) {
            steps.push(step);
            collect(&schema[keyword], steps, prefix, probes);
            steps.pop();
        }
    }
}

/// The field violations of an error answer's `BadRequest`.
fn violations(body: &Value) -> Vec<Value> {
    let details = body.pointer("/error/details").and_then(Value::as_array).cloned().unwrap_or_default();
    details.iter().flat_map(|detail| detail["fieldViolations"].as_array().cloned().unwrap_or_default()).collect()
}

/// Whether an error answer's `BadRequest` names `field` (or a part of it, or what holds it).
fn named(body: &Value, field: &str) -> bool {
    violations(body).iter().any(|violation| {
        let named = strip_indices(violation["field"].as_str().unwrap_or_default());
        named == field || named.starts_with(&format!("{field}.")) || field.starts_with(&format!("{named}."))
    })
}

/// `api_key.credits[0].unit` → `api_key.credits.unit`.
fn strip_indices(field: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in field.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn shorten(value: &impl std::fmt::Display) -> String {
    let text = value.to_string();
    if text.chars().count() > 400 { format!("{}…", text.chars().take(400).collect::<String>()) } else { text }
}
