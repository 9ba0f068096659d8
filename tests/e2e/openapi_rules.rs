//! The OpenAPI document and the server agree on every field constraint. For each
//! constrained field of every native operation (body, query and path), values around the
//! document's bounds (lengths at and one past `minLength`/`maxLength`, `minimum`/`maximum`
//! and one past, list and map sizes, strings that do and do not match the `pattern`) are
//! judged by the document and then sent to a real server: a value the document refuses must
//! be refused with a `BadRequest` naming that field, a value it accepts must not be named.
//! A rule added to the server's checks but not to `contract.rs` (or the other way round)
//! fails here.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

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
/// any owner, so no NOT_FOUND answers first, as it does for a key's AdjustCredits). The
/// server must refuse whatever the document refuses; what it accepts may still be refused.
const STATE: [(&str, &str); 1] = [("CreditService_AdjustOwnerCredits", "deltas.delta")];

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

/// Whether the schema bounds its value beyond its type.
fn constrained(schema: &Value) -> bool {
    let Some(object) = schema.as_object() else { return false };
    [
        "maxLength",
        "pattern",
        "enum",
        "anyOf",
        "minItems",
        "maxItems",
        "uniqueItems",
        "maxProperties",
        "propertyNames",
        "not",
    ]
    .iter()
    .any(|keyword| object.contains_key(*keyword))
        || schema["minLength"].as_u64().is_some_and(|min| min > 0)
        || (is_type(schema, "integer") && domain(schema).is_some_and(|(min, max)| (min, max) != type_domain(schema)))
}

/// The values worth sending to a field: each bound, one past it, and strings that test
/// the usual patterns (blank, whitespace, control characters, UUIDs, numbers, URLs, durations).
fn candidates(schema: &Value) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::new();
    if is_type(schema, "array") {
        let (min, max) = (schema["minItems"].as_u64().unwrap_or(0), schema["maxItems"].as_u64().unwrap_or(3));
        for count in [min.saturating_sub(1), min, max, max + 1] {
            if let Some(items) = distinct(&schema["items"], count as usize) {
                values.push(Value::Array(items));
            }
        }
        if schema["uniqueItems"] == true {
            let one = minimal(&schema["items"]);
            values.push(json!([one.clone(), one]));
        }
        return values;
    }
    if is_type(schema, "object") {
        let max = schema["maxProperties"].as_u64().unwrap_or(2) as usize;
        let value = minimal(&schema["additionalProperties"]);
        for count in [max, max + 1] {
            values.push(Value::Object((0..count).map(|i| (format!("k{i}"), value.clone())).collect()));
        }
        let names = &schema["propertyNames"];
        let mut keys: Vec<String> = ["", "a b", "a\u{1}"].map(str::to_owned).to_vec();
        for bound in lengths(names) {
            keys.push("a".repeat(bound));
        }
        for key in keys {
            values.push(json!({ key: value.clone() }));
        }
        return values;
    }
    if is_type(schema, "integer") && !is_type(schema, "string") || schema["format"] == "int64" {
        if let Some((min, max)) = domain(schema) {
            let (low, high) = type_domain(schema);
            for n in
                [min.checked_sub(1), Some(min), Some(0), Some(1), Some(max), max.checked_add(1)].into_iter().flatten()
            {
                if (low..=high).contains(&n) {
                    values.push(json!(n));
                }
            }
        }
        return values;
    }
    if let Some(names) = schema["enum"].as_array() {
        for name in names.iter().filter(|n| n.is_string()) {
            values.push(name.clone());
            if let Some((prefix, _)) = name.as_str().unwrap().rsplit_once('_') {
                values.push(json!(format!("{prefix}_UNSPECIFIED")));
            }
        }
        return dedup(values);
    }
    let mut texts: Vec<String> = [
        "0190b4a4-6d8e-7c3a-9f1e-2b5c7d9e1f30",
        "",
        "a",
        " ",
        "a b",
        " a",
        "a\u{1}",
        "\u{7f}",
        "a\u{85}",
        "é",
        "0",
        "1",
        "-1",
        "01",
        "1s",
        "1.5s",
        "0s",
        "2592000s",
        "2592001s",
        "x",
        "name",
        "name,scopes",
        "scopes,name,name",
        "nope",
        "0190b4a4-6d8e-7c3a-9f1e-2b5c7d9e1f3",
        "9223372036854775807",
        "9223372036854775808",
        "https://hooks.example.com/x",
        "http://hooks.example.com/x",
        "https://10.0.0.1/x",
        "2026-01-01T00:00:00Z",
    ]
    .map(str::to_owned)
    .to_vec();
    for bound in lengths(schema) {
        for filler in ["a", "1"] {
            texts.push(filler.repeat(bound));
        }
    }
    dedup(texts.into_iter().map(Value::String).collect())
}

fn dedup(values: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    values.into_iter().filter(|value| seen.insert(value.to_string())).collect()
}

/// Lengths at and one past each of the schema's (and its alternatives') length bounds.
fn lengths(schema: &Value) -> Vec<usize> {
    let mut bounds = Vec::new();
    let mut add = |schema: &Value| {
        if let Some(min) = schema["minLength"].as_u64() {
            bounds.extend([min.saturating_sub(1), min]);
        }
        if let Some(max) = schema["maxLength"].as_u64() {
            bounds.extend([max, max + 1]);
        }
    };
    add(schema);
    for alternative in schema["anyOf"].as_array().into_iter().flatten() {
        add(alternative);
    }
    bounds.into_iter().map(|n| n as usize).collect()
}

/// `count` different values the item schema accepts, if there are that many.
fn distinct(item: &Value, count: usize) -> Option<Vec<Value>> {
    let mut pool: Vec<Value> = Vec::new();
    if is_type(item, "object") {
        for i in 0..count {
            let mut value = minimal(item);
            for (name, inner) in item["properties"].as_object().into_iter().flatten() {
                if is_type(inner, "string") && accepts(inner, &json!(format!("k{i}"))) {
                    value[name] = json!(format!("k{i}"));
                }
            }
            pool.push(value);
        }
    } else {
        let mut texts: Vec<Value> = (0..count.max(1)).map(|i| json!(format!("a{i}"))).collect();
        texts.extend(candidates(item));
        pool = dedup(texts.into_iter().filter(|value| accepts(item, value)).collect());
    }
    (pool.len() >= count && pool[..count].iter().all(|value| accepts(item, value))).then(|| pool[..count].to_vec())
}

/// The smallest value the schema accepts that is worth sending.
fn minimal(schema: &Value) -> Value {
    if let Some(alternatives) = schema["anyOf"].as_array() {
        return alternatives.iter().map(minimal).find(|value| accepts(schema, value)).unwrap_or(Value::Null);
    }
    if let Some(names) = schema["enum"].as_array() {
        return names.iter().find(|n| n.is_string() && accepts(schema, n)).cloned().unwrap_or(Value::Null);
    }
    if is_type(schema, "object") || schema["properties"].is_object() {
        let mut object = Map::new();
        for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            object.insert(name.to_owned(), minimal(&schema["properties"][name]));
        }
        return Value::Object(object);
    }
    if is_type(schema, "array") {
        let min = schema["minItems"].as_u64().unwrap_or(0) as usize;
        return Value::Array(distinct(&schema["items"], min).unwrap_or_default());
    }
    if is_type(schema, "boolean") {
        return json!(false);
    }
    if is_type(schema, "integer") && !is_type(schema, "string") || schema["format"] == "int64" {
        return [1, 0].into_iter().map(|n| json!(n)).find(|v| accepts(schema, v)).unwrap_or(json!(1));
    }
    candidates(schema).into_iter().find(|value| accepts(schema, value)).unwrap_or(json!(""))
}

/// Whether the document accepts `value` by `schema`: the JSON Schema keywords it uses.
fn accepts(schema: &Value, value: &Value) -> bool {
    let Some(object) = schema.as_object() else { return true };
    if let Some(types) = object.get("type") {
        let names: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => vec![],
        };
        let fits = |name: &str| match name {
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "null" => value.is_null(),
            _ => false,
        };
        if !names.iter().any(|name| fits(name)) {
            return false;
        }
    }
    if let Some(names) = object.get("enum").and_then(Value::as_array)
        && !names.contains(value)
    {
        return false;
    }
    if object.get("not").is_some_and(|not| not.get("const") == Some(value)) {
        return false;
    }
    if let Some(alternatives) = object.get("anyOf").and_then(Value::as_array)
        && !alternatives.iter().any(|alternative| accepts(alternative, value))
    {
        return false;
    }
    if let Some(all) = object.get("allOf").and_then(Value::as_array)
        && !all.iter().all(|one| accepts(one, value))
    {
        return false;
    }
    match value {
        Value::String(text) => string_fits(schema, text),
        Value::Number(number) => {
            let n = number.as_f64().unwrap_or(f64::NAN);
            !(schema["minimum"].as_f64().is_some_and(|min| n < min)
                || schema["maximum"].as_f64().is_some_and(|max| n > max))
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            !(schema["minItems"].as_u64().is_some_and(|min| len < min)
                || schema["maxItems"].as_u64().is_some_and(|max| len > max)
                || (schema["uniqueItems"] == true && dedup(items.clone()).len() != items.len())
                || items.iter().any(|item| !accepts(&schema["items"], item)))
        }
        Value::Object(entries) => {
            let properties = schema["properties"].as_object();
            let required = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str);
            !(schema["maxProperties"].as_u64().is_some_and(|max| entries.len() as u64 > max)
                || required.into_iter().any(|name| !entries.contains_key(name))
                || entries.iter().any(|(key, inner)| {
                    let declared = properties.and_then(|p| p.get(key));
                    let schema_of = declared.or(schema.get("additionalProperties"));
                    (schema["additionalProperties"] == false && declared.is_none())
                        || !schema_of.is_none_or(|s| accepts(s, inner))
                        || !accepts(&schema["propertyNames"], &json!(key))
                }))
        }
        Value::Null | Value::Bool(_) => true,
    }
}

fn string_fits(schema: &Value, text: &str) -> bool {
    let len = text.chars().count() as u64;
    if schema["minLength"].as_u64().is_some_and(|min| len < min)
        || schema["maxLength"].as_u64().is_some_and(|max| len > max)
    {
        return false;
    }
    if let Some(pattern) = schema["pattern"].as_str()
        && !regex::Regex::new(pattern).unwrap_or_else(|err| panic!("{pattern}: {err}")).is_match(text)
    {
        return false;
    }
    schema["format"] != "date-time" || chrono::DateTime::parse_from_rfc3339(text).is_ok()
}

fn is_type(schema: &Value, name: &str) -> bool {
    match &schema["type"] {
        Value::String(one) => one == name,
        Value::Array(many) => many.iter().any(|t| t == name),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => false,
    }
}

/// An integer field's bounds by the document.
fn domain(schema: &Value) -> Option<(i64, i64)> {
    Some((schema["minimum"].as_i64()?, schema["maximum"].as_i64()?))
}

/// What the field's type holds, whatever the rules: values beyond it are no rule's to refuse.
fn type_domain(schema: &Value) -> (i64, i64) {
    match schema["format"].as_str() {
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        Some("int64") if schema["minimum"] == 0 && schema["maximum"] == u32::MAX => (0, i64::from(u32::MAX)),
        _ => (-i64::MAX, i64::MAX),
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
