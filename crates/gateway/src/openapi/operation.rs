//! One OpenAPI operation per `google.api.http` binding: its parameters and body as the
//! transcoder reads them (`native/transcode.rs`), its answer, its errors.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::{
    comments::Comments,
    errors,
    rules::Constraint,
    schema::{Input, Schemas, well_known},
};
use crate::native::{Rule, short_name};

/// The operation of `rule`, named `operation_id`.
pub(super) fn operation(rule: &Rule, operation_id: &str, schemas: &mut Schemas<'_>, comments: &Comments) -> Value {
    let variables = rule.variables();
    let input = Input::new(&rule.input, &variables);
    let mut parameters = Vec::new();
    for variable in &variables {
        let Some(field) = field_at(&rule.input, variable) else { continue };
        parameters.push(json!({
            "name": short_name(variable), "in": "path", "required": true,
            "schema": Value::Object(schemas.input_field(&input, &field, variable)),
        }));
    }
    // With body "*" the transcoder reads every field from the body, none from the query.
    if rule.body != "*" {
        for field in rule.input.fields() {
            if variables.iter().any(|v| v == field.name()) || field.name() == rule.body || !in_query(&field) {
                continue;
            }
            let mut schema = schemas.input_field(&input, &field, field.name());
            let description = schema.remove("description");
            let required = schemas.needed(&input, &field, field.name());
            if required {
                Constraint::Required.apply(&mut schema);
            }
            let mut parameter = json!({"name": field.name(), "in": "query", "required": required, "schema": schema});
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameters.push(parameter);
        }
    }
    let (service, method) = names(rule);
    let description = rule
        .input
        .parent_pool()
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .and_then(|m| comments.of(m.parent_file().name(), m.path()).map(str::to_owned))
        .unwrap_or_default();
    let mut responses = errors::responses();
    responses.insert(
        "200".to_owned(),
        json!({
            "description": format!("The {} in proto3 JSON.", rule.output.name()),
            "content": {"application/json": {"schema": schemas.output(&rule.output)}}
        }),
    );
    let mut operation = json!({
        "tags": [short_name(service)],
        "operationId": operation_id,
        "summary": method,
        "description": description,
        "security": [{"bearer": []}, {"token": []}],
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = request_body(rule, &input, schemas) {
        operation["requestBody"] = body;
    }
    operation
}

/// The body: the whole request but the path's fields (`*`), one field of it, or none.
fn request_body(rule: &Rule, input: &Input<'_>, schemas: &mut Schemas<'_>) -> Option<Value> {
    let schema = match rule.body.as_str() {
        "" => return None,
        "*" => schemas.input(input, &rule.input, ""),
        field => {
            let field = rule.input.get_field_by_name(field)?;
            Value::Object(schemas.input_field(input, &field, field.name()))
        }
    };
    // An absent body is read as `{}`: it is required only when `{}` would be refused.
    let required = schema["required"].as_array().is_some_and(|names| !names.is_empty());
    Some(json!({"required": required, "content": {"application/json": {"schema": schema}}}))
}

/// The service's full name and the method's name of `rule`.
pub(super) fn names(rule: &Rule) -> (&str, &str) {
    let path = rule.grpc_path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, path))
}

/// The field a dotted path names from `message`.
fn field_at(message: &MessageDescriptor, path: &str) -> Option<FieldDescriptor> {
    let mut names = path.split('.');
    let mut field = message.get_field_by_name(names.next()?)?;
    for name in names {
        let Kind::Message(inner) = field.kind() else { return None };
        field = inner.get_field_by_name(name)?;
    }
    Some(field)
}

/// Whether the transcoder reads the field from the query: a scalar, an enum, a well-known
/// type written as a string, or a list of those; never a map.
fn in_query(field: &FieldDescriptor) -> bool {
    if field.is_map() {
        return false;
    }
    if let Kind::Message(message) = field.kind() {
        return !field.is_list() && well_known(message.full_name()).is_some_and(|s| s["type"] == "string");
    }
    true
}

/// Links from an operation that creates a resource (a POST on a collection whose answer
/// holds a message with an `id`) to each operation on one resource of that collection, so
/// that a client or a stateful fuzzer can follow a created resource through its life.
pub(super) fn links(rule: &Rule, targets: &[(&Rule, String)]) -> Option<Map<String, Value>> {
    if rule.method != http::Method::POST || !rule.variables().is_empty() {
        return None;
    }
    let created = rule.output.fields().find(|field| {
        !field.is_list() && field.kind().as_message().is_some_and(|message| message.get_field_by_name("id").is_some())
    })?;
    let collection = format!("{}/{{", rule.template);
    let mut links = Map::new();
    for (target, operation_id) in targets {
        let variables = target.variables();
        if !target.template.starts_with(&collection) || variables.len() != 1 {
            continue;
        }
        links.insert(
            operation_id.clone(),
            json!({
                "operationId": operation_id,
                "parameters": {short_name(&variables[0]): format!("$response.body#/{}/id", created.json_name())},
                "description": format!("The {} created.", created.json_name()),
            }),
        );
    }
    (!links.is_empty()).then_some(links)
}
