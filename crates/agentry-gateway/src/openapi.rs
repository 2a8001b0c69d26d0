//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the bodies' `ToSchema` derives, so it cannot drift from the code.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{agents, events, keys, model, system, workflows};
use crate::problem::{FieldError, Problem};

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`agk_...`, from `agentry keys create`) or an OAuth 2.0 \
                         access token (JWT) from the configured issuer.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An API key (`agk_...`), as an alternative to the Authorization header.",
            ))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agentry API",
        description = "Submit software requirements to a crew of LLM agents and follow the \
            workflows that turn them into tickets, wiki pages, code, test runs and a merge request. \
            Every request may carry `x-request-id` (1-128 visible ASCII characters); it is returned, \
            logged, and a submission runs under it (resubmitting the same id returns the same workflow). \
            Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        workflows::submit, workflows::list, workflows::get, workflows::history,
        events::events,
        workflows::approve_doc, workflows::reject_doc, workflows::cancel_doc, workflows::resume_doc,
        system::definitions,
        agents::list,
        keys::list, keys::create, keys::revoke,
        system::healthz, system::readyz,
    ),
    components(schemas(Problem, FieldError, model::EventView)),
    modifiers(&Security),
    tags(
        (name = "workflows", description = "Workflows: submit, follow, control"),
        (name = "agents", description = "Agent roles and their load"),
        (name = "keys", description = "API keys of the caller's tenant (admin)"),
        (name = "system", description = "Health and readiness"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document as JSON, generated once per process from the
/// handlers and body types (served at `/openapi.json`).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|error| {
            json!({"openapi": "3.1.0", "info": {"title": "Agentry API", "version": "0",
                   "description": format!("document generation failed: {error}")}, "paths": {}})
        })
    })
}

/// The document as JSON text.
pub fn document_json() -> String {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_json::to_string_pretty(document()).unwrap_or_default())
        .clone()
}

/// A validator for each component schema, resolving `$ref`s against the
/// document's components: request bodies are checked against exactly what
/// the document publishes.
pub fn validators() -> anyhow::Result<HashMap<String, jsonschema::Validator>> {
    let doc = document();
    let components = doc
        .pointer("/components")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut out = HashMap::new();
    if let Some(schemas) = components.get("schemas").and_then(Value::as_object) {
        for name in schemas.keys() {
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/components/schemas/{name}"),
                "components": components,
            });
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .build(&root)
                .map_err(|e| anyhow::anyhow!("schema {name} does not compile: {e}"))?;
            out.insert(name.clone(), validator);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/workflows",
            "/v1/workflows/{id}",
            "/v1/workflows/{id}/history",
            "/v1/workflows/{id}/events",
            "/v1/workflows/{id}/approve",
            "/v1/workflows/{id}/reject",
            "/v1/workflows/{id}/cancel",
            "/v1/workflows/{id}/resume",
            "/v1/agents",
            "/v1/keys",
            "/healthz",
            "/readyz",
        ] {
            assert!(doc["paths"].get(path).is_some(), "missing {path}");
        }
    }

    #[test]
    fn request_schemas_reject_unknown_fields_and_name_them() {
        let v = validators().unwrap();
        let submit = &v["SubmitWorkflow"];
        assert!(submit.is_valid(&json!({"requirement": "a todo app"})));
        let bad = json!({"requirement": "", "colour": "red", "project_key": "lower"});
        let errors: Vec<String> = submit
            .iter_errors(&bad)
            .map(|e| format!("{} {}", e.instance_path, e))
            .collect();
        assert!(errors.iter().any(|e| e.contains("colour")), "{errors:?}");
        assert!(
            errors.iter().any(|e| e.starts_with("/requirement")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("/project_key")),
            "{errors:?}"
        );
    }
}
