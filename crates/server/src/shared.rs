//! What the workflow handlers (`api.rs`) and the auth handlers
//! (`auth_api.rs`) both need: finding the caller's workflow and turning a
//! rejected body or query into the API's error.

use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::StatusCode;
use gleitzeit_auth::roles::Reach;
use gleitzeit_auth::Permission;
use gleitzeit_core::ErrorCode;

/// The workflow an id (or unique prefix) names, if the caller may act on it
/// with `permission`. Ids and prefixes resolve only among the workflows the
/// caller reaches, so another user's workflow answers exactly like a missing
/// one and a prefix never lists ids the caller may not see.
pub(crate) async fn visible_workflow(
    state: &AppState,
    principal: &Principal,
    id: &str,
    permission: Permission,
) -> Result<gleitzeit_store::WorkflowRecord, ApiError> {
    let store = state.runtime.store();
    let found = match principal.reach(permission) {
        Reach::All => store.find_workflow(id).await,
        Reach::Own => store.find_workflow_of(id, &principal.user).await,
        Reach::None => Err(gleitzeit_store::StoreError::WorkflowNotFound(
            id.to_string(),
        )),
    };
    Ok(found?)
}

pub(crate) fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::new(
        ErrorCode::MalformedRequest,
        format!("bad query string: {}", rejection.body_text()),
    )
}

pub(crate) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::RequestTooLarge,
                format!("request body is larger than {limit} bytes"),
            )
        } else {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!("cannot read the request body: {}", rejection.body_text()),
            )
        }
    })
}
