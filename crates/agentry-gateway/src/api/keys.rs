//! `/v1/keys`: an admin manages its tenant's API keys.

use agentry_core::{AccessRole, Error};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::model::{CreateKey, CreatedKey, KeyInfo, KeyList};
use super::{require, AppState, Caller, PathParam, ValidJson};
use crate::auth::keys;
use crate::problem::{ApiError, ReadErrors, WriteErrors};

/// The caller's tenant's API keys.
#[utoipa::path(
    get, path = "/v1/keys", operation_id = "listKeys", tag = "keys",
    responses(
        (status = 200, description = "Keys, oldest first", body = KeyList),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
) -> Result<Json<KeyList>, ApiError> {
    require(&p, AccessRole::Admin)?;
    let keys = state.keys.list_api_keys(Some(&p.tenant)).await?;
    Ok(Json(KeyList {
        items: keys.iter().map(KeyInfo::from).collect(),
    }))
}

/// Create an API key in the caller's tenant; its secret is shown once.
#[utoipa::path(
    post, path = "/v1/keys", operation_id = "createKey", tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = CreatedKey),
        WriteErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    ValidJson(body): ValidJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    require(&p, AccessRole::Admin)?;
    let issued = keys::issue(
        &p.tenant,
        body.role.into(),
        body.name.as_deref().unwrap_or(""),
    )?;
    state.keys.create_api_key(issued.record.clone()).await?;
    tracing::info!(key_id = %issued.record.id, tenant = %p.tenant, role = %issued.record.role, by = %p.subject, "API key created.");
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: issued.key,
            info: KeyInfo::from(&issued.record),
        }),
    ))
}

/// Revoke an API key of the caller's tenant.
#[utoipa::path(
    post, path = "/v1/keys/{key_id}/revoke", operation_id = "revokeKey", tag = "keys",
    params(("key_id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = KeyInfo),
        (status = 409, description = "A key cannot revoke itself", body = crate::problem::Problem, content_type = "application/problem+json"),
        ReadErrors,
    ),
    security(("bearer" = []), ("api_key" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    axum::Extension(p): Caller,
    PathParam(key_id): PathParam,
) -> Result<Json<KeyInfo>, ApiError> {
    require(&p, AccessRole::Admin)?;
    let not_found = || {
        ApiError::NotFound(format!(
            "API key `{}` not found",
            key_id.chars().take(64).collect::<String>()
        ))
    };
    match state.keys.api_key(&key_id).await? {
        Some(k) if k.tenant == p.tenant => {}
        _ => return Err(not_found()),
    }
    if key_id == p.subject {
        // An admin locking itself out by accident helps nobody; another
        // admin key or `agentry keys revoke` can do it.
        return Err(ApiError::Conflict(
            "a key cannot revoke itself: use another admin key, or `agentry keys revoke`"
                .to_string(),
        ));
    }
    let revoked = state.keys.revoke_api_key(&key_id, chrono::Utc::now()).await;
    state.auth.forget_key(&key_id);
    let record = match revoked {
        Ok(r) => r,
        Err(Error::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    tracing::info!(key_id = %record.id, tenant = %p.tenant, by = %p.subject, "API key revoked.");
    Ok(Json(KeyInfo::from(&record)))
}
