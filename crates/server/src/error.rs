//! Every failure leaves the API as `{code, message, hint, …}` with an HTTP
//! status chosen from the GZ code, so clients can branch on either.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
pub use gleitzeit_api::{DiagnosticBody, ErrorBody};
use gleitzeit_core::parse::Diagnostic;
use gleitzeit_core::{ErrorCode, GzError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: GzError,
    pub diagnostics: Vec<Diagnostic>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        GzError::new(code, message).into()
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ApiError {
        self.error = self.error.with_hint(hint);
        self
    }

    /// A workflow that did not validate: the same diagnostics `validate` prints.
    pub fn invalid_workflow(diagnostics: Vec<Diagnostic>) -> ApiError {
        let first = diagnostics
            .first()
            .map(|d| d.to_error())
            .unwrap_or_else(|| GzError::new(ErrorCode::YamlSyntax, "workflow is invalid"));
        let mut error = GzError::new(
            first.code,
            format!(
                "workflow is invalid: {} problem{} (first: {})",
                diagnostics.len(),
                if diagnostics.len() == 1 { "" } else { "s" },
                first.message
            ),
        );
        error.location = first.location;
        error.hint = Some("Fix every problem listed in `diagnostics`; `gleitzeit validate FILE` shows the same list locally.".into());
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error,
            diagnostics,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            diagnostics: self
                .diagnostics
                .iter()
                .map(|d| DiagnosticBody {
                    code: d.code.to_string(),
                    message: d.message.clone(),
                    hint: d.hint.clone(),
                    line: d.pos.line,
                    column: d.pos.column,
                })
                .collect(),
            ..ErrorBody::new(&self.error)
        }
    }
}

impl From<GzError> for ApiError {
    fn from(error: GzError) -> ApiError {
        ApiError {
            status: status_for(error.code),
            error,
            diagnostics: Vec::new(),
        }
    }
}

impl From<gleitzeit_store::StoreError> for ApiError {
    fn from(error: gleitzeit_store::StoreError) -> ApiError {
        GzError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(
                "{} {}: {}",
                self.status,
                self.error.code,
                self.error.message
            );
        }
        (self.status, Json(self.body())).into_response()
    }
}

/// The HTTP status for an error code; the code stays the precise answer.
pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        WorkflowNotFound | TaskNotFound | FunctionNotFound | RouteNotFound | ScheduleNotFound
        | HookNotFound => StatusCode::NOT_FOUND,
        ScheduleNotRunnable => StatusCode::CONFLICT,
        HookBodyInvalid | InvalidBackfillRange => StatusCode::BAD_REQUEST,
        HookUnauthorized => StatusCode::UNAUTHORIZED,
        HookRateLimited => StatusCode::TOO_MANY_REQUESTS,
        WorkflowNotResumable => StatusCode::CONFLICT,
        RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        MalformedRequest | InvalidArgument | InvalidInput | ConfigInvalid => {
            StatusCode::BAD_REQUEST
        }
        AuthRequired | InvalidApiKey | TokenExpired | StreamTicketInvalid | KeyInUrl => {
            StatusCode::UNAUTHORIZED
        }
        PermissionDenied => StatusCode::FORBIDDEN,
        TooManyAuthFailures => StatusCode::TOO_MANY_REQUESTS,
        ServerShuttingDown | DatabaseLocked => StatusCode::SERVICE_UNAVAILABLE,
        _ if (3000..4000).contains(&(code as u16)) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
