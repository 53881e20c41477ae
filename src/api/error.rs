use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::domain::{DomainError, Rejection};
use crate::protocol::{ErrorBody, ErrorDetail};
use crate::telemetry::error_chain;

/// Seconds a client is asked to wait when a dependency is down.
const UNAVAILABLE_RETRY_AFTER: u32 = 5;

/// The one error type of the HTTP edge: a status, a stable code, a message
/// (and the headers some statuses need: `Retry-After`, `Allow`, ...).
/// Unexpected failures keep their cause for the log and answer a bare 500.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Client { status: StatusCode, code: &'static str, message: String, headers: Vec<(HeaderName, String)> },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Client { status, code, message: message.into(), headers: Vec::new() }
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

    /// 503: the database cannot be reached; worth trying again shortly.
    pub fn database_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; try again shortly",
        )
    }

    /// The same error, answered with one more header.
    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        if let ApiError::Client { headers, .. } = &mut self {
            headers.push((name, value.into()));
        }
        self
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Rejected { kind, code, message, retry_after } => {
                let status = match kind {
                    Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
                    Rejection::Forbidden => StatusCode::FORBIDDEN,
                    Rejection::NotFound => StatusCode::NOT_FOUND,
                    Rejection::Conflict => StatusCode::CONFLICT,
                    Rejection::Gone => StatusCode::GONE,
                    Rejection::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    Rejection::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    Rejection::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
                    Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    Rejection::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
                };
                let error = ApiError::new(status, code, message);
                match retry_after {
                    Some(seconds) => error.with_header(header::RETRY_AFTER, seconds.to_string()),
                    None => error,
                }
            }
            DomainError::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %error_chain(&e), "database unavailable");
                ApiError::database_unavailable()
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
        let status = self.status_code();
        let mut response = HttpResponse::build(status);
        let (code, message) = match self {
            ApiError::Client { code, message, headers, .. } => {
                for (name, value) in headers {
                    response.insert_header((name.clone(), value.as_str()));
                }
                let has_retry_after = headers.iter().any(|(name, _)| name == header::RETRY_AFTER);
                if status == StatusCode::SERVICE_UNAVAILABLE && !has_retry_after {
                    response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER.to_string()));
                }
                (*code, message.clone())
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %error_chain(cause.as_ref()), "request failed");
                ("internal_error", "something went wrong on our side".to_owned())
            }
        };
        response.json(ErrorBody { error: ErrorDetail { code: code.to_owned(), message } })
    }
}
