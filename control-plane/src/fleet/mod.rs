//! The hosts: the internal CA and enrollment that give agents their identity, the agents'
//! endpoint and its sessions, the hub of live connections, and the telemetry they report.

pub mod enrollment;
pub mod hub;
pub mod link;
pub mod pki;
pub mod telemetry;

pub use hub::{AgentConn, ChunkStream, ConnTask, Hub, LinkError, Revocations};
