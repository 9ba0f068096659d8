//! What the document says of a value: whether a schema constrains a field, the values worth
//! sending to it, and whether the schema accepts a value (the subset of JSON Schema the
//! document uses).

use super::*;

/// Whether the schema bounds its value beyond its type.
pub(super) fn constrained(schema: &Value) -> bool {
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
pub(super) fn candidates(schema: &Value) -> Vec<Value> {
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

pub(super) fn dedup(values: Vec<Value>) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    values.into_iter().filter(|value| seen.insert(value.to_string())).collect()
}

/// Lengths at and one past each of the schema's (and its alternatives') length bounds.
pub(super) fn lengths(schema: &Value) -> Vec<usize> {
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
pub(super) fn distinct(item: &Value, count: usize) -> Option<Vec<Value>> {
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
pub(super) fn minimal(schema: &Value) -> Value {
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
pub(super) fn accepts(schema: &Value, value: &Value) -> bool {
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

pub(super) fn string_fits(schema: &Value, text: &str) -> bool {
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

pub(super) fn is_type(schema: &Value, name: &str) -> bool {
    match &schema["type"] {
        Value::String(one) => one == name,
        Value::Array(many) => many.iter().any(|t| t == name),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => false,
    }
}

/// An integer field's bounds by the document.
pub(super) fn domain(schema: &Value) -> Option<(i64, i64)> {
    Some((schema["minimum"].as_i64()?, schema["maximum"].as_i64()?))
}

/// What the field's type holds, whatever the rules: values beyond it are no rule's to refuse.
pub(super) fn type_domain(schema: &Value) -> (i64, i64) {
    match schema["format"].as_str() {
        Some("int32") => (i64::from(i32::MIN), i64::from(i32::MAX)),
        Some("int64") if schema["minimum"] == 0 && schema["maximum"] == u32::MAX => (0, i64::from(u32::MAX)),
        _ => (-i64::MAX, i64::MAX),
    }
}
