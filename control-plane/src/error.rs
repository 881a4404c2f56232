//! The API's one error type: every failure becomes a status and
//! `{"error":{"code":"snake_case","message":"human sentence"}}`.

use axon_shared::ErrorCode;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// An error answered to an API caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limits, overload).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// A JSON route called without the JSON content type.
    pub fn not_json() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "send the body as JSON, with the header Content-Type: application/json",
        )
    }
    /// Adds a `Retry-After` header to the answer.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, m)
    }
    pub fn rate_limited(m: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, m)
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, ErrorCode::Timeout, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        // Kept for the layers that answer in another dialect (`/v1`).
        response.extensions_mut().insert(self.clone());
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        match e {
            // The disk refused (full, failing): nothing about the request is wrong.
            StoreError::Io { .. } | StoreError::File { .. } => {
                Self::unavailable("the control plane's store cannot write now; see its log")
            }
            _ => Self::internal("the control plane's store failed; see its log"),
        }
    }
}

/// The framework's words for a rejected request, in ours: what was wrong and, where serde
/// says, which field.
fn in_our_words(text: &str) -> String {
    const OURS: &[(&str, &str)] = &[
        (
            "Failed to deserialize the JSON body into the target type: ",
            "the JSON body does not fit this endpoint: ",
        ),
        (
            "Failed to parse the request body as JSON: ",
            "the request body is not valid JSON: ",
        ),
        (
            "Failed to deserialize query string: ",
            "the query string does not fit this endpoint: ",
        ),
        ("Invalid URL: ", "invalid path: "),
        (
            "Failed to buffer the request body: ",
            "the request body could not be read: ",
        ),
    ];
    for (theirs, ours) in OURS {
        if let Some(rest) = text.strip_prefix(theirs) {
            return format!("{ours}{}", name_field(rest));
        }
    }
    text.to_owned()
}

/// `settings.welcome: invalid type ...` (serde's path, then the error) → "field
/// `settings.welcome`: invalid type ...".
fn name_field(rest: &str) -> String {
    match rest.split_once(": ") {
        Some((".", msg)) => msg.to_owned(),
        Some((path, msg)) if !path.is_empty() && !path.contains(' ') && !path.contains('`') => {
            format!("field `{path}`: {msg}")
        }
        _ => rest.to_owned(),
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        use axum::extract::rejection::JsonRejection as R;
        match e {
            R::BytesRejection(b) => b.into(),
            R::MissingJsonContentType(_) => Self::not_json(),
            other => Self::bad_request(in_our_words(&other.body_text())),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large("request body is too large")
        } else {
            Self::bad_request(format!("the request body could not be read: {e}"))
        }
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        Self::bad_request(in_our_words(&e.body_text()))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::bad_request(in_our_words(&e.body_text()))
    }
}

/// A form body (`application/x-www-form-urlencoded`, what browsers post) whose rejections use
/// the API's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiForm<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::FormRejection as R;
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(Self(value)),
            Err(R::InvalidFormContentType(_)) => Err(ApiForm::<()>::not_form()),
            Err(R::BytesRejection(b)) => Err(b.into()),
            Err(other) => Err(ApiError::bad_request(in_our_words(&other.body_text()))),
        }
    }
}

impl ApiForm<()> {
    fn not_form() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            "send the form as Content-Type: application/x-www-form-urlencoded",
        )
    }
}

/// JSON body extractor whose rejections use the API's error shape. Every body of the API is
/// a JSON object: an array, which serde would otherwise read into a struct field by field, is
/// refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::not_json());
        }
        let bytes = axum::body::Bytes::from_request(req, state).await?;
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::bad_request(
                "the JSON body must be an object, as in {\"field\": value}",
            ));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Path extractor whose rejections use the API's error shape.
#[derive(Debug, Clone, Copy, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[cfg(test)]
mod tests {
    use super::in_our_words;

    #[test]
    fn framework_messages_are_reworded_with_the_field() {
        assert_eq!(
            in_our_words(
                "Failed to deserialize the JSON body into the target type: email: invalid type: integer `5`, expected a string at line 1 column 10"
            ),
            "the JSON body does not fit this endpoint: field `email`: invalid type: integer `5`, expected a string at line 1 column 10"
        );
        assert_eq!(
            in_our_words(
                "Failed to deserialize query string: limit: invalid digit found in string"
            ),
            "the query string does not fit this endpoint: field `limit`: invalid digit found in string"
        );
        assert!(
            in_our_words("Failed to parse the request body as JSON: EOF while parsing")
                .starts_with("the request body is not valid JSON")
        );
    }
}
