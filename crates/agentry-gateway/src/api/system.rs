//! Health, readiness and the list of workflow definitions: the routes the
//! OpenAPI document tags `system` (and the definitions, under `workflows`).

use std::collections::BTreeMap;

use agentry_core::AccessRole;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::model::{DefinitionList, Health, Readiness};
use super::{require, AppState, Caller};
use crate::problem::{ApiError, NotAProblem, ReadErrors};

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "system",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
    })
}

/// Readiness: the store and the bus are reachable.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "system",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is down", body = Readiness),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = BTreeMap::new();
    let timeout = std::time::Duration::from_secs(2);
    // Callers see `ok` or `failed`; the cause goes to the log.
    let verdict = |what: &str, result: Result<agentry_core::Result<()>, _>| match result {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(error)) => {
            tracing::warn!(%error, check = what, "Readiness check failed.");
            "failed".to_string()
        }
        Err(tokio::time::error::Elapsed { .. }) => {
            tracing::warn!(check = what, "Readiness check timed out.");
            "failed".to_string()
        }
    };
    let store = verdict(
        "store",
        tokio::time::timeout(timeout, state.store.health()).await,
    );
    let bus = verdict(
        "bus",
        tokio::time::timeout(timeout, state.engine.bus().health()).await,
    );
    let draining = state.shutdown.is_cancelled();
    let ready = store == "ok" && bus == "ok" && !draining;
    checks.insert(format!("store ({})", state.store.name()), store);
    checks.insert(format!("bus ({})", state.engine.bus().name()), bus);
    if draining {
        checks.insert("server".to_string(), "shutting down".to_string());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (
        status,
        Json(Readiness {
            status: if ready { "ready" } else { "unavailable" }.to_string(),
            checks,
        }),
    )
        .into_response();
    // A probe's 503 is its readiness report, as documented.
    response.extensions_mut().insert(NotAProblem);
    response
}

/// Workflow definitions a submission may name.
#[utoipa::path(
    get, path = "/v1/workflow-definitions", operation_id = "listWorkflowDefinitions", tag = "workflows",
    responses(
        (status = 200, description = "Names", body = DefinitionList),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn definitions(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
) -> Result<Json<DefinitionList>, ApiError> {
    require(&p, AccessRole::Viewer)?;
    Ok(Json(DefinitionList {
        items: state.definitions.names(),
    }))
}
