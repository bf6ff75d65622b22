//! What a failure looks like on the wire: the body of every error response,
//! and the error a task or workflow view carries.

use gleitzeit_core::GzError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable error code, e.g. `GZ3021`.
    pub code: String,
    pub message: String,
    /// What to do about it.
    pub hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Object)]
    pub details: Value,
    /// Every problem found in a submitted workflow (422 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<DiagnosticBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DiagnosticBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub line: usize,
    pub column: usize,
}

impl ErrorBody {
    /// The body for one error; diagnostics are the caller's to add.
    pub fn new(error: &GzError) -> ErrorBody {
        let ErrorView {
            code,
            message,
            hint,
            location,
            retryable,
            details,
        } = ErrorView::new(error);
        ErrorBody {
            code,
            message,
            hint,
            location,
            retryable,
            details,
            diagnostics: Vec::new(),
        }
    }
}

/// An error inside a view (a failed task or workflow) and in `--json`
/// output: every key is present, and the hint is spelled out (the
/// registry's when the error has none of its own).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorView {
    /// Stable error code, e.g. `GZ3021`.
    pub code: String,
    pub message: String,
    pub hint: String,
    pub location: Option<String>,
    pub retryable: bool,
    #[schema(value_type = Object)]
    pub details: Value,
}

impl ErrorView {
    pub fn new(error: &GzError) -> ErrorView {
        ErrorView {
            code: error.code.to_string(),
            message: error.message.clone(),
            hint: error.hint_text().to_string(),
            location: error.location.clone(),
            retryable: error.retryable,
            details: error.details.clone(),
        }
    }
}

pub fn error_json(error: &GzError) -> Value {
    serde_json::to_value(ErrorView::new(error)).unwrap_or(Value::Null)
}
