//! The one error type of the HTTP layer. Each variant maps to a status and a
//! stable `code`; internal causes are logged with an incident id and never
//! shown to the client.
//!
//! Body: `{"error": {"code": "<snake_case>", "message": "<what to do>"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a field is invalid (400).
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong, for a human.
        message: String,
    },
    /// No valid credentials (401).
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Not found, or not visible to this tenant (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The route exists but not with this method (405).
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The request conflicts with the current state (409).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong, for a human.
        message: String,
    },
    /// The enrollment token cannot be used (401, with a precise code).
    #[error("{message}")]
    Token {
        /// `token_unknown`, `token_expired`, `token_used`, `token_revoked`.
        code: &'static str,
        /// What is wrong, for a human.
        message: String,
    },
    /// Refused by a security decision that new credentials cannot fix, e.g.
    /// enrolling with the keys of a revoked agent (403, with a precise code).
    #[error("{message}")]
    Refused {
        /// Stable machine-readable code, e.g. `key_revoked`.
        code: &'static str,
        /// What is wrong and what to do, for a human.
        message: String,
    },
    /// Too many failed attempts; try again after the given seconds (429 with `Retry-After`).
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until the next attempt is accepted.
        retry_after_secs: u64,
    },
    /// The content is well-formed but invalid, with every finding (422):
    /// e.g. a rule query with unbalanced quotes, each with line and column.
    #[error("{message}")]
    Unprocessable {
        /// Stable machine-readable code, e.g. `invalid_rule`.
        code: &'static str,
        /// Summary for a human.
        message: String,
        /// Each finding (`field`, `line`, `column`, `code`, `message`).
        details: Vec<picket_rules::Diagnostic>,
    },
    /// Something failed inside the server (500). The cause is logged, not returned.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// Shorthand for a 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for a 403 with a code and message.
    pub fn refused(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Refused {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for a 409 with a code and message.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        ApiError::Internal(anyhow::Error::new(e))
    }
}

impl From<sea_orm::TransactionError<ApiError>> for ApiError {
    fn from(e: sea_orm::TransactionError<ApiError>) -> Self {
        match e {
            sea_orm::TransactionError::Connection(db) => db.into(),
            sea_orm::TransactionError::Transaction(api) => api,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable machine-readable code.
    code: String,
    /// Human-readable message.
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, *code, message.clone())
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", self.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", self.to_string()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                self.to_string(),
            ),
            ApiError::Conflict { code, message } => (StatusCode::CONFLICT, *code, message.clone()),
            ApiError::Token { code, message } => (StatusCode::UNAUTHORIZED, *code, message.clone()),
            ApiError::Refused { code, message } => (StatusCode::FORBIDDEN, *code, message.clone()),
            ApiError::RateLimited { retry_after_secs } => {
                let body = ErrorBody {
                    error: ErrorDetail {
                        code: "too_many_attempts".to_owned(),
                        message: self.to_string(),
                    },
                };
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(
                        axum::http::header::RETRY_AFTER,
                        retry_after_secs.to_string(),
                    )],
                    Json(body),
                )
                    .into_response();
            }
            ApiError::Unprocessable {
                code,
                message,
                details,
            } => {
                let body = serde_json::json!({
                    "error": { "code": code, "message": message, "details": details }
                });
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            ApiError::Internal(cause) => {
                let incident = uuid::Uuid::new_v4();
                tracing::error!(%incident, error = ?cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!(
                        "internal error (incident {incident}); the details are in the server log"
                    ),
                )
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// Result type of handlers and services.
pub type ApiResult<T> = Result<T, ApiError>;
