//! `GET /v1/agents`: agent roles, their workers and load.

use agentry_core::{AccessRole, AgentRole};
use axum::extract::State;
use axum::Json;

use super::model::{AgentList, AgentStatus};
use super::{require, AppState, Caller};
use crate::problem::{ApiError, ReadErrors};

/// Agent roles with their workers, load and status.
#[utoipa::path(
    get, path = "/v1/agents", operation_id = "listAgents", tag = "agents",
    responses(
        (status = 200, description = "Roles and load", body = AgentList),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
) -> Result<Json<AgentList>, ApiError> {
    require(&p, AccessRole::Viewer)?;
    let loads = state.engine.queue_loads();
    let agents = AgentRole::ALL
        .iter()
        .map(|role| {
            let load = loads.iter().find(|l| l.queue == role.as_str());
            let workers = load.map_or(0, |l| l.workers);
            let in_flight = load.map_or(0, |l| l.in_flight);
            AgentStatus {
                role: role.as_str().to_string(),
                status: if workers == 0 {
                    "stopped"
                } else if in_flight > 0 {
                    "busy"
                } else {
                    "idle"
                }
                .to_string(),
                workers,
                in_flight,
                completed: load.map_or(0, |l| l.completed),
                failed: load.map_or(0, |l| l.failed),
                last_task_at: load.and_then(|l| l.last_task_at),
            }
        })
        .collect();
    Ok(Json(AgentList {
        mode: match state.runs.execution() {
            crate::runs::Execution::Local => "embedded",
            crate::runs::Execution::Dispatch => "distributed",
        }
        .to_string(),
        running_workflows: state.runs.running() as u64,
        max_running_workflows: state.runs.limit() as u64,
        agents,
    }))
}
