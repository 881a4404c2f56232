//! Live events for subscribers of `/api/ws` and of streaming endpoints: hosts coming and going,
//! audit records as they are written, and command output as it is produced. One broadcast
//! channel; a subscriber that falls behind is told how many events it missed.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::model::AuditRecord as Record;

/// Events kept for slow subscribers before they start missing some.
const CAPACITY: usize = 1024;

/// One live event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    HostOnline {
        host_id: String,
    },
    HostOffline {
        host_id: String,
        reason: String,
    },
    Audit {
        record: Box<Record>,
    },
    /// A service changed state on a host: a systemd job finished, a unit's state moved, or a
    /// container event.
    ServiceChanged {
        host_id: String,
        kind: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        job_result: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        active_state: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sub_state: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
    /// A host's sample, at its agent's interval.
    Metrics {
        host_id: String,
        sample: Box<axon_shared::MetricsSample>,
    },
    /// A host's model servers changed.
    HostModels {
        host_id: String,
        model_servers: axon_shared::ModelServers,
    },
    /// A GPU fault was reported (it stays until acknowledged).
    GpuAlert {
        host_id: String,
        alert: Box<crate::model::GpuAlert>,
    },
    /// A host's capabilities changed (systemd, Docker, GPU or a model server came or went).
    HostCapabilities {
        host_id: String,
        capabilities: axon_shared::Capabilities,
    },
    /// A change in one of a host's jail roots.
    FileChanged {
        host_id: String,
        path: String,
        kind: String,
    },
    /// A piece of a running command's output.
    ExecOutput {
        host_id: String,
        /// The link request id; streaming endpoints match on it.
        request_id: String,
        seq: u64,
        stream: String,
        data: String,
        last: bool,
    },
}

impl LiveEvent {
    /// The host the event is about, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            Self::HostOnline { host_id }
            | Self::HostOffline { host_id, .. }
            | Self::HostCapabilities { host_id, .. }
            | Self::Metrics { host_id, .. }
            | Self::HostModels { host_id, .. }
            | Self::GpuAlert { host_id, .. } => Some(host_id),
            Self::ExecOutput { host_id, .. }
            | Self::FileChanged { host_id, .. }
            | Self::ServiceChanged { host_id, .. } => Some(host_id),
            Self::Audit { record } => record.host_id.as_deref(),
        }
    }

    /// The event's type name, as serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::HostOnline { .. } => "host_online",
            Self::HostOffline { .. } => "host_offline",
            Self::Audit { .. } => "audit",
            Self::ExecOutput { .. } => "exec_output",
            Self::FileChanged { .. } => "file_changed",
            Self::ServiceChanged { .. } => "service_changed",
            Self::HostCapabilities { .. } => "host_capabilities",
            Self::Metrics { .. } => "metrics",
            Self::HostModels { .. } => "host_models",
            Self::GpuAlert { .. } => "gpu_alert",
        }
    }
}

/// The channel.
#[derive(Debug, Clone)]
pub struct Live {
    tx: broadcast::Sender<std::sync::Arc<LiveEvent>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Live {
    /// Publishes an event; nobody listening is fine.
    pub fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(std::sync::Arc::new(event));
    }

    /// A new subscription, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<std::sync::Arc<LiveEvent>> {
        self.tx.subscribe()
    }
}
