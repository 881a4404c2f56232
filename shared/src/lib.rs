//! Axon wire protocol: the frames agentd and the control plane exchange over the agent link,
//! and the enrollment messages of the API.
//!
//! Every frame is one JSON text message holding one envelope, tagged by `kind`:
//! `request` (an operation to perform, answered by exactly one `response` with the same `id`),
//! `event` (agent-initiated, sequenced per agent) and `chunk` (a piece of long output belonging
//! to a request). Frames larger than the configured limit ([`DEFAULT_MAX_FRAME`] by default) are
//! refused before parsing. The crate does no I/O and has no async (it also reads the link-relevant facts of a certificate): both sides and the tests use it
//! as plain data. Golden fixtures under `fixtures/` pin the format.

mod cert;
pub mod chain;
pub mod cli;
mod duration;
mod frame;
mod id;
mod messages;
mod metrics;
mod token;

pub use cert::{CertInfo, CertParseError};
pub use chain::{sha256, sha256_hex};
pub use duration::parse_duration;
pub use frame::{Chunk, ErrorCode, Event, Frame, ProtocolError, Request, Response, WireError};
pub use id::{Ulid, hex_decode, hex_encode};
pub use messages::{
    AuditRecord, Cancel, Capabilities, CertRenew, CertRenewed, CommandInfo, ContainerRun,
    ContainerStats, EnrollRequest, EnrollResponse, EventAck, ExecResult, ExecRun, FsContent,
    FsEntry, FsKind, FsListing, FsOp, Hello, HostFacts, ImageInfo, ImagePull, LlmForward,
    LlmForwarded, LogLine, ModelServerKind, MountSpec, ParamSchema, Pong, PortInfo, PortSpec,
    Requester, SERVICE_ACTIONS, ServiceActed, ServiceEvent, ServiceInfo, ServiceLogs, ServiceOp,
    StreamAck, Welcome, op, stream, topic,
};
pub use metrics::{
    CpuSample, DiskSample, GpuEvent, GpuProcess, GpuSample, MemorySample, MetricsSample,
    ModelServers, NetSample, Ollama, OllamaLoaded, OllamaModel, ProcessSample, StableDiffusion,
    Temperature,
};
pub use token::{EnrollmentToken, TokenError};

/// Protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Oldest protocol version this build still accepts from a peer.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Default hard limit on one frame, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;
/// Path of the agents' WebSocket endpoint on the agent listener.
pub const AGENT_PATH: &str = "/agent/v1";
/// Path of the enrollment endpoint on the API listener.
pub const ENROLL_PATH: &str = "/api/enroll";
/// Longest request id accepted (a ULID is 26 characters).
pub const MAX_ID_LEN: usize = 64;
/// Longest operation or topic name accepted.
pub const MAX_OP_LEN: usize = 64;
/// Chunks of one flow-controlled stream (`llm.forward`) the agent sends before it waits for a
/// `stream.ack`.
pub const STREAM_WINDOW: u64 = 16;
/// Most bytes of `data` in one chunk of a flow-controlled stream.
pub const MAX_STREAM_CHUNK: usize = 32 * 1024;
/// Prefix of the URI SAN that names the host in an agent certificate: `urn:axon:host:<id>`.
pub const HOST_URI_PREFIX: &str = "urn:axon:host:";
