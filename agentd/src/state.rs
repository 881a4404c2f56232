//! The agent's state dir: its key (0600), certificate, the control plane's CA, and where to dial.
//!
//! Every file is written to a temporary name, fsynced, then renamed, so a crash never leaves a
//! half-written key or certificate.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const KEY_FILE: &str = "agent.key";
pub const CERT_FILE: &str = "agent.pem";
pub const CA_FILE: &str = "ca.pem";
pub const IDENTITY_FILE: &str = "agent.json";

/// A state-dir operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{dir} is not enrolled (no {file}); run `agentd enroll` first")]
    NotEnrolled { dir: PathBuf, file: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is unreadable: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Who the agent is and where it dials, as received at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub host_id: String,
    /// `wss://host:port/agent/v1`
    pub agent_url: String,
    /// The API URL used at enrollment.
    pub server: String,
}

/// A state dir on disk.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether an identity is already stored.
    pub fn is_enrolled(&self) -> bool {
        self.dir.join(IDENTITY_FILE).exists()
    }

    /// Creates the directory (0700).
    pub fn create(&self) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| StateError::Write {
                path: self.dir.clone(),
                source,
            })
    }

    /// Reads one file of the state dir as text.
    pub fn read(&self, file: &'static str) -> Result<String, StateError> {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StateError::NotEnrolled {
                    dir: self.dir.clone(),
                    file,
                }
            } else {
                StateError::Read { path, source }
            }
        })
    }

    /// Atomically replaces one file of the state dir.
    pub fn write(&self, file: &str, contents: &str, mode: u32) -> Result<(), StateError> {
        let path = self.dir.join(file);
        let tmp = self.dir.join(format!(".{file}.tmp"));
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(contents.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The stored identity.
    pub fn identity(&self) -> Result<Identity, StateError> {
        let text = self.read(IDENTITY_FILE)?;
        serde_json::from_str(&text).map_err(|e| StateError::Invalid {
            path: self.dir.join(IDENTITY_FILE),
            reason: e.to_string(),
        })
    }

    /// Stores the identity.
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        let text = serde_json::to_string_pretty(identity).unwrap_or_default();
        self.write(IDENTITY_FILE, &text, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_are_atomic_and_keep_mode() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(tmp.path().join("s"));
        state.create().expect("create");
        assert!(!state.is_enrolled());
        assert!(matches!(
            state.identity(),
            Err(StateError::NotEnrolled { .. })
        ));
        state.write(KEY_FILE, "secret", 0o600).expect("write");
        state.write(KEY_FILE, "secret2", 0o600).expect("rewrite");
        assert_eq!(state.read(KEY_FILE).expect("read"), "secret2");
        let mode = std::fs::metadata(state.path().join(KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = Identity {
            host_id: "h".into(),
            agent_url: "wss://x:7443/agent/v1".into(),
            server: "https://x:8443".into(),
        };
        state.save_identity(&id).expect("save");
        assert_eq!(state.identity().expect("load"), id);
        std::fs::write(state.path().join(IDENTITY_FILE), "{").expect("corrupt");
        assert!(matches!(state.identity(), Err(StateError::Invalid { .. })));
    }
}
