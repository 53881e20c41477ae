use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::domain::{DomainError, Rejection};
use crate::protocol::{ErrorBody, ErrorDetail};

/// The one error type of the HTTP edge: a status, a stable code, a message.
/// Unexpected failures keep their cause for the log and answer a bare 500.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Client { status: StatusCode, code: &'static str, message: String },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Rejected { kind, code, message } => {
                let status = match kind {
                    Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
                    Rejection::Forbidden => StatusCode::FORBIDDEN,
                    Rejection::NotFound => StatusCode::NOT_FOUND,
                    Rejection::Conflict => StatusCode::CONFLICT,
                    Rejection::Gone => StatusCode::GONE,
                    Rejection::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    Rejection::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
                };
                ApiError::Client { status, code, message }
            }
            DomainError::Store(e) => ApiError::Internal(Box::new(e)),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (code, message) = match self {
            ApiError::Client { code, message, .. } => (*code, message.clone()),
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "request failed");
                ("internal_error", "something went wrong on our side".to_owned())
            }
        };
        HttpResponse::build(self.status_code())
            .json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message } })
    }
}

/// "outer: inner: root" — the whole cause chain on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
