//! `/v1/workflows`: submit, list, read, history and control actions.

use agentry_core::{AccessRole, RequestId, WorkflowQuery, WorkflowStatus};
use agentry_engine::Submission;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tracing::info;

use super::model::*;
use super::{require, AppState, Caller, PathParam, ValidJson};
use crate::problem::{current_request_id, ApiError, ReadErrors, WriteErrors};

/// Query of `GET /v1/workflows`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only workflows with this status.
    pub status: Option<Status>,
    /// Page size (1–500, default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Continue after this workflow id (the `next` of the previous page).
    #[param(format = Uuid)]
    pub before: Option<String>,
}

/// Parses a query string, naming the bad parameter.
pub fn parse_query<T: serde::de::DeserializeOwned + Default>(
    raw: Option<String>,
) -> Result<T, ApiError> {
    match raw.as_deref() {
        None | Some("") => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(q).map_err(|error| {
            // Every parameter is optional, so the first pair that fails on
            // its own is the one to name.
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
            let field = pairs
                .iter()
                .find(|pair| {
                    serde_urlencoded::to_string([pair])
                        .is_ok_and(|one| serde_urlencoded::from_str::<T>(&one).is_err())
                })
                .map_or_else(|| "query".to_string(), |(name, _)| name.clone());
            // serde names an unknown parameter in its message; the field
            // already does.
            let message = error.to_string();
            let message = match message.strip_prefix("unknown field `") {
                Some(rest) => match rest.split_once("`, ") {
                    Some((_, known)) => format!("is not a known parameter; {known}"),
                    None => "is not a known parameter".to_string(),
                },
                None => message,
            };
            ApiError::field(field, message)
        }),
    }
}

fn accepted(record: &agentry_core::WorkflowRecord, status: StatusCode) -> Response {
    let body = WorkflowAccepted {
        id: record.id.to_string(),
        status: record.status.into(),
        request_id: client_request_id(record.tenant.as_deref(), &record.request_id),
        links: WorkflowLinks::of(record.id),
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/workflows/{}", record.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Submit a requirement; the workflow runs in the background.
#[utoipa::path(
    post, path = "/v1/workflows", operation_id = "submitWorkflow", tag = "workflows",
    request_body = SubmitWorkflow,
    responses(
        (status = 202, description = "Accepted; the workflow runs in the background", body = WorkflowAccepted,
            headers(("location" = String, description = "The workflow's URL"))),
        (status = 200, description = "The same request id was submitted before with the same requirement: that workflow", body = WorkflowAccepted),
        WriteErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn submit(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    headers: axum::http::HeaderMap,
    ValidJson(body): ValidJson<SubmitWorkflow>,
) -> Result<Response, ApiError> {
    let client_request_id = headers.contains_key("x-request-id");
    require(&p, AccessRole::Operator)?;
    if body.requirement.trim().is_empty() {
        return Err(ApiError::field("/requirement", "must not be blank"));
    }
    let chars = body.requirement.chars().count();
    if chars > state.config.max_requirement_chars {
        return Err(ApiError::field(
            "/requirement",
            format!(
                "is {chars} characters long; the limit is {}",
                state.config.max_requirement_chars
            ),
        ));
    }
    let definition = state
        .definitions
        .load(body.workflow.as_deref())
        .map_err(|message| ApiError::field("/workflow", message))?;
    let request_id = current_request_id()
        .unwrap_or_else(RequestId::generate)
        .scoped(&p.tenant);
    // A resubmission of a request id the client chose answers without a
    // permit; an id this server generated is new by construction.
    if client_request_id {
        if let Some(existing) = state.store.find_by_request_id(&request_id).await? {
            return resubmitted(&p, &existing, &body.requirement, &definition.name);
        }
    }
    let permit = state.runs.try_permit()?;
    let options = body.run_options(&state.base_options);
    let definition_name = definition.name.clone();
    let record = state
        .engine
        .submit(Submission {
            requirements: body.requirement.clone(),
            request_id: Some(request_id),
            definition,
            options,
            tenant: Some(p.tenant.clone()),
        })
        .await?;
    if record.tenant.as_deref() != Some(p.tenant.as_str())
        || record.requirements != body.requirement
        || record.status != WorkflowStatus::Pending
    {
        // Lost a race with a submission of the same request id.
        return resubmitted(&p, &record, &body.requirement, &definition_name);
    }
    info!(workflow_id = %record.id, tenant = %p.tenant, "Workflow accepted.");
    state.runs.start_new(record.id, permit);
    Ok(accepted(&record, StatusCode::ACCEPTED))
}

fn resubmitted(
    p: &crate::auth::Principal,
    existing: &agentry_core::WorkflowRecord,
    requirement: &str,
    workflow: &str,
) -> Result<Response, ApiError> {
    if existing.tenant.as_deref() == Some(p.tenant.as_str())
        && existing.requirements == requirement
        && existing.workflow_name == workflow
    {
        Ok(accepted(existing, StatusCode::OK))
    } else {
        Err(ApiError::Conflict(
            "this x-request-id was already used for another submission; send a new one".to_string(),
        ))
    }
}

/// List the caller's workflows, newest first.
#[utoipa::path(
    get, path = "/v1/workflows", operation_id = "listWorkflows", tag = "workflows",
    params(ListParams),
    responses(
        (status = 200, description = "A page of workflows", body = WorkflowList),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<WorkflowList>, ApiError> {
    require(&p, AccessRole::Viewer)?;
    let params: ListParams = parse_query(raw)?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let before = match params.before.as_deref() {
        Some(b) => Some(
            b.parse()
                .map_err(|_| ApiError::field("before", "must be a workflow id (a UUID)"))?,
        ),
        None => None,
    };
    let page = state
        .store
        .list_workflows(WorkflowQuery {
            status: params.status.map(Into::into),
            tenant: Some(p.tenant.clone()),
            limit,
            before,
        })
        .await?;
    Ok(Json(WorkflowList {
        items: page.items.iter().map(WorkflowSummary::from).collect(),
        next: page.next.map(|n| n.to_string()),
    }))
}

/// A workflow: state, outputs, artifacts, usage.
#[utoipa::path(
    get, path = "/v1/workflows/{id}", operation_id = "getWorkflow", tag = "workflows",
    params(("id" = String, Path, format = Uuid, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow", body = WorkflowDetail),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
) -> Result<Json<WorkflowDetail>, ApiError> {
    require(&p, AccessRole::Viewer)?;
    let record = state.workflow_of(&p, &id).await?;
    let state_now = state.store.state_at(record.id, None).await?;
    let outputs = state.store.agent_outputs(record.id).await?;
    Ok(Json(WorkflowDetail::new(&record, &state_now, &outputs)))
}

/// Query of `GET /v1/workflows/{id}/history`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Answer the state at the end of this step instead of the list (as
    /// `agentry workflows history ID --step N`); 0 to the last step.
    #[param(minimum = 0)]
    pub step: Option<u64>,
}

/// A workflow's history (its checkpoints), oldest first; with `step`, its
/// state at the end of that step.
#[utoipa::path(
    get, path = "/v1/workflows/{id}/history", operation_id = "getWorkflowHistory", tag = "workflows",
    params(("id" = String, Path, format = Uuid, description = "Workflow id"), HistoryParams),
    responses(
        (status = 200, description = "The history; with `step`, the state at the end of that step", body = HistoryAnswer),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
    RawQuery(raw): RawQuery,
) -> Result<Json<HistoryAnswer>, ApiError> {
    require(&p, AccessRole::Viewer)?;
    let params: HistoryParams = parse_query(raw)?;
    let record = state.workflow_of(&p, &id).await?;
    if let Some(step) = params.step {
        // The CLI's call: the store folds the checkpoints up to the step
        // and refuses a step past the last as invalid input.
        let at = state.store.state_at(record.id, Some(step)).await;
        let at = at.map_err(|error| match error {
            agentry_core::Error::InvalidInput(why) => ApiError::field("step", why),
            other => ApiError::from(other),
        })?;
        let view = WorkflowStateAtStep::new(&record, &at);
        return Ok(Json(HistoryAnswer::StateAtStep(Box::new(view))));
    }
    let checkpoints = state.store.checkpoints(record.id).await?;
    Ok(Json(HistoryAnswer::History(History {
        items: checkpoints.iter().map(HistoryEntry::from).collect(),
    })))
}

/// The note of a control action: the caller's words plus who and which
/// request, for the history.
fn note_of(p: &crate::auth::Principal, action: &str, words: Option<&str>) -> String {
    let who = format!(
        "{action} by {} (tenant {}, request {})",
        p.subject,
        p.tenant,
        current_request_id()
            .map(|r| r.to_string())
            .unwrap_or_default()
    );
    match words.map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => format!("{w} ({who})"),
        None => who,
    }
}

macro_rules! control_path {
    ($method:ident, $id:literal, $path:literal, $body:ty, $ok:literal, $okdesc:literal) => {
        #[utoipa::path(
            post, path = $path, tag = "workflows", operation_id = $id,
            params(("id" = String, Path, format = Uuid, description = "Workflow id")),
            request_body(content = $body, description = "Optional for approve, cancel and resume"),
            responses(
                (status = $ok, description = $okdesc, body = WorkflowAccepted),
                WriteErrors,
            ),
            security(("bearer" = []), ("api_key" = []))
        )]
        #[allow(dead_code)]
        fn $method() {}
    };
}

control_path!(
    approve_doc,
    "approveWorkflow",
    "/v1/workflows/{id}/approve",
    ApproveBody,
    202,
    "Approved; the workflow continues in the background"
);
control_path!(
    reject_doc,
    "rejectWorkflow",
    "/v1/workflows/{id}/reject",
    RejectBody,
    200,
    "Rejected"
);
control_path!(
    cancel_doc,
    "cancelWorkflow",
    "/v1/workflows/{id}/cancel",
    CancelBody,
    200,
    "Cancelled"
);
control_path!(
    resume_doc,
    "resumeWorkflow",
    "/v1/workflows/{id}/resume",
    ResumeBody,
    202,
    "Resumed from the last checkpoint in the background"
);

/// Approve a workflow waiting for a human; it continues in the background.
pub async fn approve(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
    ValidJson(body): ValidJson<ApproveBody>,
) -> Result<Response, ApiError> {
    require(&p, AccessRole::Operator)?;
    let record = state.workflow_of(&p, &id).await?;
    if record.status != WorkflowStatus::AwaitingApproval {
        return Err(ApiError::Conflict(format!(
            "workflow {} is {}, not awaiting approval",
            record.id, record.status
        )));
    }
    let permit = state.runs.try_permit()?;
    let note = note_of(&p, "approved", body.note.as_deref());
    let record = state.engine.approve(record.id, &note).await?;
    state.runs.start(record.id, Some(permit));
    Ok(accepted(&record, StatusCode::ACCEPTED))
}

/// Reject a workflow waiting for a human.
pub async fn reject(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
    ValidJson(body): ValidJson<RejectBody>,
) -> Result<Response, ApiError> {
    require(&p, AccessRole::Operator)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::field("/reason", "must not be blank"));
    }
    let record = state.workflow_of(&p, &id).await?;
    let reason = note_of(&p, "rejected", Some(&body.reason));
    let record = state.engine.reject(record.id, &reason).await?;
    Ok(accepted(&record, StatusCode::OK))
}

/// Cancel a workflow.
pub async fn cancel(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
    ValidJson(body): ValidJson<CancelBody>,
) -> Result<Response, ApiError> {
    require(&p, AccessRole::Operator)?;
    let record = state.workflow_of(&p, &id).await?;
    let reason = note_of(&p, "cancelled", body.reason.as_deref());
    let record = state.engine.cancel(record.id, &reason).await?;
    Ok(accepted(&record, StatusCode::OK))
}

/// Resume a workflow from its last checkpoint (after a failure, a
/// cancellation or a crash); it runs in the background.
pub async fn resume(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(id): PathParam,
    ValidJson(body): ValidJson<ResumeBody>,
) -> Result<Response, ApiError> {
    require(&p, AccessRole::Operator)?;
    let record = state.workflow_of(&p, &id).await?;
    match record.status {
        WorkflowStatus::Completed | WorkflowStatus::Rejected => {
            return Err(ApiError::Conflict(format!(
                "workflow {} is {}; there is nothing to resume",
                record.id, record.status
            )))
        }
        WorkflowStatus::AwaitingApproval => {
            return Err(ApiError::Conflict(format!(
                "workflow {} is awaiting approval: approve or reject it",
                record.id
            )))
        }
        _ => {}
    }
    if state.runs.is_active(record.id)
        && matches!(
            record.status,
            WorkflowStatus::Pending | WorkflowStatus::Running
        )
    {
        return Ok(accepted(&record, StatusCode::ACCEPTED));
    }
    let permit = state.runs.try_permit()?;
    info!(workflow_id = %record.id, note = %note_of(&p, "resumed", body.note.as_deref()), "Workflow resumed.");
    state.runs.resume(record.id, Some(permit));
    Ok(accepted(&record, StatusCode::ACCEPTED))
}
