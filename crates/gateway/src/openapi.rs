//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the code
//! so it cannot drift: the compatible surfaces from their handlers' `utoipa::path`
//! annotations and DTOs, the native API from the same `google.api.http` rules that route it.

use axum::{Json, Router, routing::get};
use prost_reflect::{FieldDescriptor, Kind};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::native::{Native, Rule, short_name};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward REST gateway",
        description = "The native API (google.api.http transcoding, proto3 JSON) and the PSP, Masumi and generic scoped-key surfaces."
    ),
    paths(
        crate::psp::list,
        crate::psp::create,
        crate::psp::update,
        crate::psp::delete,
        crate::psp::usage,
        crate::scoped::list,
        crate::scoped::create,
        crate::scoped::fetch,
        crate::scoped::delete,
        crate::masumi::health,
        crate::masumi::status,
        crate::masumi::list,
        crate::masumi::create,
        crate::masumi::update,
        crate::masumi::delete,
        crate::masumi::rpc_keys,
    )
)]
struct Compatible;

pub(crate) fn routes(native: &Native) -> Router {
    let document = document(native);
    Router::new().route("/openapi.json", get(move || std::future::ready(Json(document.clone()))))
}

/// The whole document.
pub fn document(native: &Native) -> Value {
    let mut document = serde_json::to_value(Compatible::openapi()).unwrap_or_else(|_| json!({}));
    document["openapi"] = json!("3.1.0");
    let paths = document["paths"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut paths: Map<String, Value> = paths;
    for rule in native.rules() {
        let item = paths.entry(rule.openapi_path()).or_insert_with(|| json!({}));
        item[rule.method.as_str().to_ascii_lowercase()] = operation(rule);
    }
    document["paths"] = Value::Object(paths);
    let components = document["components"].as_object_mut().map(std::mem::take).unwrap_or_default();
    let mut components: Map<String, Value> = components;
    let schemas = components.entry("schemas").or_insert_with(|| json!({}));
    schemas["NativeError"] = json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "status", "details"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status."},
                "message": {"type": "string"},
                "status": {"type": "string", "description": "The gRPC code's name."},
                "details": {"type": "array", "items": {"type": "object"}}
            }
        }}
    });
    components.insert(
        "securitySchemes".to_owned(),
        json!({
            "bearer": {"type": "http", "scheme": "bearer", "description": "A keyward API key or a JWT of the configured identity provider."},
            "token": {"type": "apiKey", "in": "header", "name": "token", "description": "A keyward API key (the Masumi header)."}
        }),
    );
    document["components"] = Value::Object(components);
    document
}

fn operation(rule: &Rule) -> Value {
    let rpc = rule.grpc_path.rsplit('/').next().unwrap_or_default();
    let variables = rule.variables();
    let mut parameters: Vec<Value> = variables
        .iter()
        .map(|name| json!({"name": short_name(name), "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if rule.body != "*" {
        for field in rule.input.fields() {
            if variables.iter().any(|v| v == field.name()) || field.name() == rule.body || field.is_map() {
                continue;
            }
            if let Some(schema) = query_schema(&field) {
                parameters.push(json!({"name": field.name(), "in": "query", "required": false, "schema": schema}));
            }
        }
    }
    let error = json!({"description": "An error in Google's JSON error model.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NativeError"}}}});
    let mut operation = json!({
        "tags": ["native"],
        "operationId": rpc,
        "summary": format!("{} ({})", rpc, rule.input.full_name()),
        "security": [{"bearer": []}, {"token": []}],
        "parameters": parameters,
        "responses": {
            "200": {"description": format!("{} in proto3 JSON.", rule.output.full_name()),
                "content": {"application/json": {"schema": {"type": "object"}}}},
            "default": error,
        }
    });
    if !rule.body.is_empty() {
        operation["requestBody"] =
            json!({"required": false, "content": {"application/json": {"schema": {"type": "object"}}}});
    }
    operation
}

/// The schema of a field given in the query, for the scalar fields and enums that can be.
fn query_schema(field: &FieldDescriptor) -> Option<Value> {
    let one = match field.kind() {
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({"type": "integer", "format": "int32"}),
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => json!({"type": "string"}),
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::String | Kind::Bytes => json!({"type": "string"}),
        Kind::Enum(values) => {
            json!({"type": "string", "enum": values.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
        Kind::Message(_) => return None,
    };
    Some(if field.is_list() { json!({"type": "array", "items": one}) } else { one })
}
