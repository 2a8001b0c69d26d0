//! `GET /v1/agents`: agent roles, their workers and load: this server's own
//! workers in the embedded mode, the registry's worker processes (with
//! their health) in the distributed mode.

use agentry_core::{AccessRole, AgentRole, WorkerHealth, WorkerRecord};
use agentry_engine::QueueLoad;
use axum::extract::State;
use axum::Json;

use super::model::{AgentList, AgentStatus, WorkerView};
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
    let (agents, workers) = match &state.registry {
        Some((registry, timeout)) => {
            let records = registry.list_workers().await.map_err(ApiError::from)?;
            from_registry(&records, *timeout)
        }
        None => (local_agents(&state.engine.queue_loads()), Vec::new()),
    };
    Ok(Json(AgentList {
        mode: match state.runs.execution() {
            crate::runs::Execution::Local => "embedded",
            crate::runs::Execution::Dispatch => "distributed",
        }
        .to_string(),
        running_workflows: state.runs.running() as u64,
        max_running_workflows: state.runs.limit() as u64,
        agents,
        workers,
    }))
}

fn status_of(workers: u32, in_flight: u32) -> String {
    if workers == 0 {
        "stopped"
    } else if in_flight > 0 {
        "busy"
    } else {
        "idle"
    }
    .to_string()
}

/// The roles as this process's own workers serve them.
fn local_agents(loads: &[QueueLoad]) -> Vec<AgentStatus> {
    AgentRole::ALL
        .iter()
        .map(|role| {
            let load = loads.iter().find(|l| l.queue == role.as_str());
            let workers = load.map_or(0, |l| l.workers);
            let in_flight = load.map_or(0, |l| l.in_flight);
            AgentStatus {
                role: role.as_str().to_string(),
                status: status_of(workers, in_flight),
                workers,
                in_flight,
                completed: load.map_or(0, |l| l.completed),
                failed: load.map_or(0, |l| l.failed),
                last_task_at: load.and_then(|l| l.last_task_at),
                unhealthy_workers: 0,
            }
        })
        .collect()
}

/// The roles as the registry's worker processes serve them: per role, the
/// healthy workers serving it and their load (a worker serving several
/// roles counts toward each), and the workers that went silent.
fn from_registry(
    records: &[WorkerRecord],
    timeout: std::time::Duration,
) -> (Vec<AgentStatus>, Vec<WorkerView>) {
    let now = chrono::Utc::now();
    let live: Vec<(&WorkerRecord, WorkerHealth)> = records
        .iter()
        .map(|r| (r, r.health(now, timeout)))
        .filter(|(_, h)| *h != WorkerHealth::Stopped)
        .collect();
    let agents = AgentRole::ALL
        .iter()
        .map(|role| {
            let serving = live
                .iter()
                .filter(|(r, _)| r.info.roles.iter().any(|x| x == role.as_str()));
            let mut status = AgentStatus {
                role: role.as_str().to_string(),
                status: String::new(),
                workers: 0,
                in_flight: 0,
                completed: 0,
                failed: 0,
                last_task_at: None,
                unhealthy_workers: 0,
            };
            for (r, health) in serving {
                if *health != WorkerHealth::Healthy {
                    status.unhealthy_workers += 1;
                    continue;
                }
                status.workers += 1;
                status.in_flight += r.beat.in_flight;
                status.completed += r.beat.completed;
                status.failed += r.beat.failed;
                status.last_task_at = status.last_task_at.max(r.beat.last_task_at);
            }
            status.status = status_of(status.workers, status.in_flight);
            status
        })
        .collect();
    let workers = live
        .iter()
        .map(|(r, health)| WorkerView {
            id: r.info.id.clone(),
            host: r.info.host.clone(),
            pid: r.info.pid,
            roles: r.info.roles.clone(),
            tags: r.info.tags.clone(),
            concurrency: r.info.concurrency,
            health: health.as_str().to_string(),
            in_flight: r.beat.in_flight,
            completed: r.beat.completed,
            failed: r.beat.failed,
            last_heartbeat: r.beat.at,
            last_task_at: r.beat.last_task_at,
            started_at: r.info.started_at,
        })
        .collect();
    (agents, workers)
}
