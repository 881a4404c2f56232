//! The envelope and its four kinds.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{MAX_ID_LEN, MAX_OP_LEN, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// One frame on the agent link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Frame {
    /// Asks the peer to perform `op`; answered by one [`Response`] with the same id.
    Request(Request),
    /// The answer to a request.
    Response(Response),
    /// Agent-initiated, sequenced per agent so the control plane can acknowledge and deduplicate.
    Event(Event),
    /// A piece of long output belonging to the request `id`.
    Chunk(Chunk),
}

/// An operation to perform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Protocol version of the sender.
    pub v: u32,
    /// Unique id chosen by the sender (a ULID), echoed in the response.
    pub id: String,
    /// Operation name, e.g. `ping` or `exec.run`.
    pub op: String,
    /// Operation parameters; `null` when the operation takes none.
    #[serde(default)]
    pub body: Value,
}

/// The answer to one request: `ok` with a body, or not `ok` with an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Protocol version of the sender.
    pub v: u32,
    /// Id of the request this answers.
    pub id: String,
    /// Whether the operation succeeded.
    pub ok: bool,
    /// Result of a successful operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Why the operation failed; present exactly when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<WireError>,
}

/// Something the agent reports on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Protocol version of the sender.
    pub v: u32,
    /// What the event is about: `metrics`, `audit`, `watch`, ...
    pub topic: String,
    /// Per-agent sequence number, strictly increasing, used for acknowledgement and replay.
    pub seq: u64,
    /// Event payload.
    #[serde(default)]
    pub body: Value,
}

/// A piece of long output of a running request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Protocol version of the sender.
    pub v: u32,
    /// Id of the request the output belongs to.
    pub id: String,
    /// Position of this chunk in the request's output, from 0.
    pub seq: u64,
    /// True on the last chunk of the request.
    #[serde(rename = "final")]
    pub last: bool,
    /// Which output the data came from, e.g. `stdout` or `stderr`.
    pub stream: String,
    /// The output, as UTF-8 text (invalid bytes replaced).
    pub data: String,
}

/// A failed operation, as carried in a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human sentence saying what went wrong.
    pub message: String,
}

/// Stable error codes shared by the link and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed or its parameters invalid.
    BadRequest,
    /// The peer does not know the operation.
    UnknownOp,
    /// The peer's protocol version is not supported.
    UnsupportedVersion,
    /// The caller is not authenticated.
    Unauthorized,
    /// The caller is authenticated but not allowed.
    Forbidden,
    /// The object does not exist.
    NotFound,
    /// The operation conflicts with the current state.
    Conflict,
    /// The operation did not finish in time.
    Timeout,
    /// A dependency (the agent, an engine, a bus) cannot be reached.
    Unavailable,
    /// Something exceeded a size limit.
    TooLarge,
    /// Too many requests.
    RateLimited,
    /// An unexpected failure on the peer's side.
    Internal,
    /// A code this build does not know yet (sent by a newer peer).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Other => "other",
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The frame is larger than the limit; it was not parsed.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    /// The frame is not a valid envelope.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The envelope's version is outside what this build accepts.
    #[error("protocol version {got} is not supported (accepted {min}..={max})")]
    Version { got: u32, min: u32, max: u32 },
    /// The envelope parsed but breaks a rule of the protocol.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

impl ProtocolError {
    /// The wire code that describes this error to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Version { .. } => ErrorCode::UnsupportedVersion,
            Self::Malformed(_) | Self::Invalid(_) => ErrorCode::BadRequest,
        }
    }
}

impl Frame {
    /// Parses and validates one frame, refusing anything above `max_bytes` before parsing.
    pub fn decode(text: &str, max_bytes: usize) -> Result<Self, ProtocolError> {
        if text.len() > max_bytes {
            return Err(ProtocolError::TooLarge {
                size: text.len(),
                limit: max_bytes,
            });
        }
        let frame: Frame = serde_json::from_str(text)?;
        frame.validate()?;
        Ok(frame)
    }

    /// Serialises the frame to its JSON text.
    pub fn encode(&self) -> String {
        // Serialising these types cannot fail: all map keys are strings.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Protocol version the frame was sent with.
    pub fn version(&self) -> u32 {
        match self {
            Self::Request(r) => r.v,
            Self::Response(r) => r.v,
            Self::Event(e) => e.v,
            Self::Chunk(c) => c.v,
        }
    }

    fn validate(&self) -> Result<(), ProtocolError> {
        let v = self.version();
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v) {
            return Err(ProtocolError::Version {
                got: v,
                min: MIN_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
            });
        }
        let check_id = |id: &str| {
            if id.is_empty() || id.len() > MAX_ID_LEN {
                Err(ProtocolError::Invalid("id must be 1 to 64 characters"))
            } else {
                Ok(())
            }
        };
        let check_name = |name: &str| {
            let valid = !name.is_empty()
                && name.len() <= MAX_OP_LEN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if valid {
                Ok(())
            } else {
                Err(ProtocolError::Invalid(
                    "op and topic must be 1 to 64 characters of [A-Za-z0-9._-]",
                ))
            }
        };
        match self {
            Self::Request(r) => {
                check_id(&r.id)?;
                check_name(&r.op)
            }
            Self::Response(r) => {
                check_id(&r.id)?;
                match (r.ok, &r.error) {
                    (true, Some(_)) => Err(ProtocolError::Invalid("ok response carries an error")),
                    (false, None) => Err(ProtocolError::Invalid("failed response lacks an error")),
                    _ => Ok(()),
                }
            }
            Self::Event(e) => check_name(&e.topic),
            Self::Chunk(c) => check_id(&c.id),
        }
    }
}

impl Request {
    /// A request for `op` with a typed body.
    pub fn new<T: Serialize>(id: impl Into<String>, op: &str, body: &T) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: id.into(),
            op: op.to_owned(),
            body: serde_json::to_value(body).unwrap_or(Value::Null),
        }
    }

    /// The body read as `T`.
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.body)
    }
}

impl Response {
    /// A successful answer to `id`.
    pub fn ok<T: Serialize>(id: impl Into<String>, body: &T) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: id.into(),
            ok: true,
            body: Some(serde_json::to_value(body).unwrap_or(Value::Null)),
            error: None,
        }
    }

    /// A failed answer to `id`.
    pub fn err(id: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: id.into(),
            ok: false,
            body: None,
            error: Some(WireError {
                code,
                message: message.into(),
            }),
        }
    }

    /// The body of a successful response read as `T`, or the peer's error.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, WireError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        T::deserialize(self.body.unwrap_or(Value::Null)).map_err(|e| WireError {
            code: ErrorCode::BadRequest,
            message: format!("unexpected response body: {e}"),
        })
    }
}

impl From<Request> for Frame {
    fn from(r: Request) -> Self {
        Self::Request(r)
    }
}

impl From<Response> for Frame {
    fn from(r: Response) -> Self {
        Self::Response(r)
    }
}
