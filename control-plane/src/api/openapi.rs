//! `GET /api/openapi.json`: an OpenAPI 3.1 document generated from the policy table, so it
//! lists exactly the routes the router serves, with who may call each and the API-key scope.

use axum::routing::get;
use serde_json::{Map, Value, json};

use super::Route;
use crate::error::ApiJson;
use crate::policy::{Access, RULES};
use axum::http::Method;

pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/api/openapi.json", get(document))]
}

async fn document() -> ApiJson<Value> {
    ApiJson(build())
}

/// The document.
pub fn build() -> Value {
    let mut paths = Map::new();
    for rule in RULES {
        let entry = paths
            .entry(rule.path.to_owned())
            .or_insert_with(|| json!({}));
        let params: Vec<Value> = rule
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "operationId": format!("{} {}", rule.method.to_lowercase(), rule.path),
            "parameters": params,
            "responses": {
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        });
        match rule.access {
            Access::Public => {
                op["security"] = json!([]);
                op["description"] = json!("Public.");
            }
            Access::Roles(roles, scope) => {
                let names: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
                op["security"] = json!([{"bearer": []}]);
                op["description"] = json!(format!(
                    "Roles: {}. API-key scope: {scope}.",
                    names.join(", ")
                ));
                op["x-axon-roles"] = json!(names);
                op["x-axon-scope"] = json!(scope);
            }
        }
        entry[rule.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Axon control plane API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "JWT access token or API key (axk_...)"}
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}}}}
                }
            }
        }
    })
}
