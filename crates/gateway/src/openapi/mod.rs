//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the code
//! so it cannot drift: the compatible surfaces from their handlers' `utoipa::path`
//! annotations and DTOs, the native API from the descriptor set that routes it (messages,
//! `google.api.http` rules, field behaviours, comments) and the constraints the server
//! validates with ([`FieldRule`], handed over by the server).

mod comments;
mod errors;
mod operation;
mod rules;
mod schema;

use axum::{Json, Router, routing::get};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

pub use self::rules::{Constraint, FieldRule, decimal_range};
use self::{comments::Comments, rules::Rules, schema::Schemas};
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

pub(crate) fn routes(native: &Native, rules: &[FieldRule]) -> Router {
    let document = document(native, rules);
    Router::new().route("/openapi.json", get(move || std::future::ready(Json(document.clone()))))
}

/// The whole document, the native operations constrained by the server's `rules`.
pub fn document(native: &Native, rules: &[FieldRule]) -> Value {
    let mut document = serde_json::to_value(Compatible::openapi()).unwrap_or_else(|_| json!({}));
    document["openapi"] = json!("3.1.0");
    let mut paths: Map<String, Value> = document["paths"].as_object_mut().map(std::mem::take).unwrap_or_default();
    // The surfaces' handlers share names (`list`, `create`): each operationId takes its
    // surface's tag, so generated clients name them `psp_list`, `masumi_list`.
    for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
        if let (Some(tag), Some(id)) = (operation["tags"][0].as_str(), operation["operationId"].as_str()) {
            operation["operationId"] = json!(format!("{tag}_{id}"));
        }
    }
    let mut components: Map<String, Value> =
        document["components"].as_object_mut().map(std::mem::take).unwrap_or_default();

    let pool = native.pool();
    let comments = Comments::new(pool);
    let rules = Rules::new(rules);
    let mut schemas = Schemas::new(pool, &comments, &rules);
    let named = operation_ids(native.rules());
    for (rule, operation_id) in &named {
        let mut operation = operation::operation(rule, operation_id, &mut schemas, &comments);
        if let Some(links) = operation::links(rule, &named) {
            operation["responses"]["200"]["links"] = Value::Object(links);
        }
        let item = paths.entry(rule.openapi_path()).or_insert_with(|| json!({}));
        item[rule.method.as_str().to_ascii_lowercase()] = operation;
    }
    document["paths"] = Value::Object(paths);

    let component_schemas = components.entry("schemas").or_insert_with(|| json!({}));
    for (name, schema) in std::mem::take(&mut schemas.components) {
        component_schemas[name] = schema;
    }
    errors::add_components(&mut components);
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

/// Each rule with its operationId, `<Service>_<Method>`, a binding after the first of one
/// method numbered from 2.
fn operation_ids(rules: &[Rule]) -> Vec<(&Rule, String)> {
    let mut seen: Vec<String> = Vec::new();
    rules
        .iter()
        .map(|rule| {
            let (service, method) = operation::names(rule);
            let base = format!("{}_{method}", short_name(service));
            let count = seen.iter().filter(|name| **name == base).count();
            seen.push(base.clone());
            (rule, if count == 0 { base } else { format!("{base}_{}", count + 1) })
        })
        .collect()
}
