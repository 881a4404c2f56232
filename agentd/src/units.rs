//! systemd over D-Bus (zbus): list units in one call, read one unit, and run start / stop /
//! restart / reload with job tracking — the call returns when systemd's job finishes, with its
//! result, or times out clearly. The bus address can be overridden (tests run a real systemd in
//! its own namespaces and reach it through `DBUS_SYSTEM_BUS_ADDRESS`).

use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use zbus::wire::OwnedObjectPath;

const DEST: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";

/// A unit as `ListUnits` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    pub name: String,
    pub description: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`, ... for units with a file.
    pub unit_file_state: Option<String>,
}

/// Details of one unit, where systemd has them (u64::MAX means "not accounted" to systemd).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitDetail {
    pub main_pid: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub cpu_nsec: Option<u64>,
    pub active_since: Option<u64>,
    pub last_result: Option<String>,
    pub unit_file_state: Option<String>,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    /// systemd's job result: `done`, `failed`, `canceled`, `timeout`, `dependency`, `skipped`.
    pub job_result: String,
    /// The unit's state after the job.
    pub active_state: String,
    pub sub_state: String,
}

/// A unit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("systemd is not reachable on the system bus: {0}")]
    Unavailable(String),
    #[error("unit {0} not found")]
    NotFound(String),
    #[error("systemd refused {action} on {unit}: {reason}")]
    Refused {
        unit: String,
        action: String,
        reason: String,
    },
    #[error("{action} of {unit} did not finish within {secs} s")]
    Timeout {
        unit: String,
        action: String,
        secs: u64,
    },
}

/// The systemd manager on one bus.
pub struct Systemd {
    conn: zbus::Connection,
}

type ListedUnit = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

impl Systemd {
    /// Connects to `address`, or to the system bus (honouring `DBUS_SYSTEM_BUS_ADDRESS`).
    pub async fn connect(address: Option<&str>) -> Result<Self, UnitError> {
        let builder = match address {
            Some(a) => zbus::connection::Builder::address(a),
            None => zbus::connection::Builder::system(),
        };
        let conn = builder
            .build()
            .await
            .map_err(|e| UnitError::Unavailable(e.to_string()))?;
        Ok(Self { conn })
    }

    async fn manager(&self) -> Result<zbus::Proxy<'_>, UnitError> {
        zbus::Proxy::new(&self.conn, DEST, PATH, MANAGER)
            .await
            .map_err(|e| UnitError::Unavailable(e.to_string()))
    }

    /// A proxy for `iface` on the unit's object (loading the unit if needed).
    async fn unit_proxy(
        &self,
        unit: &str,
        iface: &'static str,
    ) -> Result<zbus::Proxy<'_>, UnitError> {
        let path: OwnedObjectPath = self
            .manager()
            .await?
            .call("LoadUnit", &(unit,))
            .await
            .map_err(|e| UnitError::Refused {
                unit: unit.into(),
                action: "load".into(),
                reason: e.to_string(),
            })?;
        zbus::Proxy::new(&self.conn, DEST, path, iface)
            .await
            .map_err(|e| UnitError::Unavailable(e.to_string()))
    }

    /// The stream of `JobRemoved` signals. Signals flow only to subscribers; subscribing is
    /// once per connection (a repeat is refused, which is fine).
    async fn job_signals(
        manager: &zbus::Proxy<'_>,
    ) -> Result<zbus::proxy::SignalStream<'static>, UnitError> {
        if let Err(e) = manager.call::<_, _, ()>("Subscribe", &()).await
            && !e.to_string().contains("AlreadySubscribed")
        {
            return Err(UnitError::Unavailable(e.to_string()));
        }
        manager
            .receive_signal("JobRemoved")
            .await
            .map_err(|e| UnitError::Unavailable(e.to_string()))
    }

    /// Follows systemd's finished jobs (`JobRemoved`) and units' state changes
    /// (`PropertiesChanged` of `ActiveState`, also when a unit stops or crashes on its own)
    /// until the bus goes away.
    /// `files_changed` runs when unit files were enabled, disabled or reloaded.
    pub async fn follow_changes(
        &self,
        tx: &tokio::sync::broadcast::Sender<axon_shared::ServiceEvent>,
        files_changed: impl Fn(),
    ) -> Result<(), UnitError> {
        let unavailable = |e: zbus::Error| UnitError::Unavailable(e.to_string());
        let manager = self.manager().await?;
        let mut removed = Self::job_signals(&manager).await?;
        let mut files = manager
            .receive_signal("UnitFilesChanged")
            .await
            .map_err(unavailable)?;
        let mut reloading = manager
            .receive_signal("Reloading")
            .await
            .map_err(unavailable)?;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(DEST)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .path_namespace("/org/freedesktop/systemd1/unit")
            .build()
            .map_err(unavailable)?;
        let mut changed = zbus::MessageStream::for_match_rule(
            rule,
            &self.conn,
            std::num::NonZeroUsize::new(1024),
        )
        .await
        .map_err(unavailable)?;
        loop {
            tokio::select! {
                signal = removed.next() => {
                    let Some(signal) = signal else { return Ok(()) };
                    if let Ok((_, _, unit, result)) = signal
                        .body()
                        .deserialize::<(u32, OwnedObjectPath, String, String)>()
                    {
                        let _ = tx.send(axon_shared::ServiceEvent {
                            kind: "systemd".into(),
                            name: unit,
                            job_result: Some(result),
                            ..Default::default()
                        });
                    }
                }
                signal = files.next() => {
                    if signal.is_none() {
                        return Ok(());
                    }
                    files_changed();
                }
                signal = reloading.next() => {
                    if signal.is_none() {
                        return Ok(());
                    }
                    files_changed();
                }
                message = changed.next() => {
                    let Some(Ok(message)) = message else { return Ok(()) };
                    if let Some(event) = state_change(&message) {
                        let _ = tx.send(event);
                    }
                }
            }
        }
    }

    /// Every loaded unit, in one D-Bus call.
    pub async fn list(&self) -> Result<Vec<UnitInfo>, UnitError> {
        let units: Vec<ListedUnit> = self
            .manager()
            .await?
            .call("ListUnits", &())
            .await
            .map_err(|e| UnitError::Unavailable(e.to_string()))?;
        let mut out: Vec<UnitInfo> = units
            .into_iter()
            .map(|u| UnitInfo {
                name: u.0,
                description: u.1,
                load_state: u.2,
                active_state: u.3,
                sub_state: u.4,
                unit_file_state: None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The install state of every unit file, by unit name. systemd reads every unit file
    /// for this (about 0.1 s on a stock host), so callers cache it.
    pub async fn unit_file_states(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, UnitError> {
        let files: Vec<(String, String)> = self
            .manager()
            .await?
            .call("ListUnitFiles", &())
            .await
            .map_err(|e| UnitError::Unavailable(e.to_string()))?;
        Ok(files
            .into_iter()
            .filter_map(|(path, state)| Some((path.rsplit('/').next()?.to_owned(), state)))
            .collect())
    }

    /// The unit's current state (loading it if needed).
    pub async fn state(&self, unit: &str) -> Result<UnitInfo, UnitError> {
        let proxy = self.unit_proxy(unit, UNIT).await?;
        let prop = |name: &'static str| {
            let proxy = &proxy;
            async move { proxy.get_property::<String>(name).await.unwrap_or_default() }
        };
        let info = UnitInfo {
            name: unit.to_owned(),
            description: prop("Description").await,
            load_state: prop("LoadState").await,
            active_state: prop("ActiveState").await,
            sub_state: prop("SubState").await,
            unit_file_state: Some(prop("UnitFileState").await).filter(|s| !s.is_empty()),
        };
        if info.load_state == "not-found" {
            return Err(UnitError::NotFound(unit.to_owned()));
        }
        Ok(info)
    }

    /// `enable` or `disable` the unit's install section (persistently), then reload systemd.
    async fn install(&self, unit: &str, action: &str) -> Result<ActionOutcome, UnitError> {
        self.state(unit).await?;
        let manager = self.manager().await?;
        let refused = |e: zbus::Error| UnitError::Refused {
            unit: unit.into(),
            action: action.into(),
            reason: e.to_string(),
        };
        if action == "enable" {
            let _: (bool, Vec<(String, String, String)>) = manager
                .call("EnableUnitFiles", &(vec![unit], false, false))
                .await
                .map_err(refused)?;
        } else {
            let _: Vec<(String, String, String)> = manager
                .call("DisableUnitFiles", &(vec![unit], false))
                .await
                .map_err(refused)?;
        }
        let _: () = manager.call("Reload", &()).await.map_err(refused)?;
        let file_state: String = manager
            .call("GetUnitFileState", &(unit,))
            .await
            .unwrap_or_default();
        let after = self.state(unit).await?;
        Ok(ActionOutcome {
            job_result: if (action == "enable") == (file_state == "enabled") {
                "done".into()
            } else {
                format!("unit file is {file_state}")
            },
            active_state: after.active_state,
            sub_state: after.sub_state,
        })
    }

    /// Main PID, memory, CPU, since when active and the last result of a unit.
    pub async fn detail(&self, unit: &str) -> Result<UnitDetail, UnitError> {
        let unit_proxy = self.unit_proxy(unit, UNIT).await?;
        let since_us = unit_proxy
            .get_property::<u64>("ActiveEnterTimestamp")
            .await
            .ok();
        let mut detail = UnitDetail {
            active_since: since_us.filter(|t| *t > 0).map(|t| t / 1_000_000),
            unit_file_state: unit_proxy
                .get_property::<String>("UnitFileState")
                .await
                .ok()
                .filter(|s| !s.is_empty()),
            ..UnitDetail::default()
        };
        // Service-only properties: other unit types simply do not have them.
        if unit.ends_with(".service") {
            let service = self
                .unit_proxy(unit, "org.freedesktop.systemd1.Service")
                .await?;
            let accounted = |v: Option<u64>| v.filter(|n| *n != u64::MAX);
            detail.main_pid = service.get_property::<u32>("MainPID").await.ok();
            detail.memory_bytes =
                accounted(service.get_property::<u64>("MemoryCurrent").await.ok());
            detail.cpu_nsec = accounted(service.get_property::<u64>("CPUUsageNSec").await.ok());
            detail.last_result = service.get_property::<String>("Result").await.ok();
        }
        Ok(detail)
    }

    /// Runs `start`, `stop`, `restart` or `reload` and waits for systemd's job to finish;
    /// `enable` and `disable` change the install state (no job).
    pub async fn act(
        &self,
        unit: &str,
        action: &str,
        timeout: Duration,
    ) -> Result<ActionOutcome, UnitError> {
        if matches!(action, "enable" | "disable") {
            return self.install(unit, action).await;
        }
        let method = match action {
            "start" => "StartUnit",
            "stop" => "StopUnit",
            "restart" => "RestartUnit",
            "reload" => "ReloadUnit",
            other => {
                return Err(UnitError::Refused {
                    unit: unit.into(),
                    action: other.into(),
                    reason: "not a job action".into(),
                });
            }
        };
        self.state(unit).await?;
        let manager = self.manager().await?;
        // Listen before asking, so the job's end is not missed.
        let mut removed = Self::job_signals(&manager).await?;
        let job: OwnedObjectPath = manager
            .call(method, &(unit, "replace"))
            .await
            .map_err(|e| UnitError::Refused {
                unit: unit.into(),
                action: action.into(),
                reason: e.to_string(),
            })?;
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok((_, path, _, result)) = signal
                    .body()
                    .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == job {
                    return Some(result);
                }
            }
            None
        };
        let job_result = tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| UnitError::Timeout {
                unit: unit.into(),
                action: action.into(),
                secs: timeout.as_secs(),
            })?
            .unwrap_or_else(|| "unknown".into());
        let after = self.state(unit).await?;
        Ok(ActionOutcome {
            job_result,
            active_state: after.active_state,
            sub_state: after.sub_state,
        })
    }
}

/// A unit's `ActiveState` change, from a `PropertiesChanged` signal on its object.
fn state_change(message: &zbus::Message) -> Option<axon_shared::ServiceEvent> {
    let header = message.header();
    let path = header.path()?;
    let (iface, changed, _): (
        String,
        std::collections::HashMap<String, zbus::OwnedVariant>,
        Vec<String>,
    ) = message.body().deserialize().ok()?;
    if iface != UNIT {
        return None;
    }
    let text = |key: &str| {
        changed
            .get(key)
            .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
    };
    let active_state = text("ActiveState")?;
    Some(axon_shared::ServiceEvent {
        kind: "systemd".into(),
        name: unescape_path(path.as_str().rsplit('/').next()?),
        job_result: None,
        active_state: Some(active_state),
        sub_state: text("SubState"),
        action: None,
    })
}

/// The unit name in an object path's last element: systemd writes every byte other than
/// letters and digits (and a leading digit) as `_xx`.
fn unescape_path(element: &str) -> String {
    let bytes = element.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn object_paths_unescape_to_unit_names() {
        assert_eq!(super::unescape_path("hello_2eservice"), "hello.service");
        assert_eq!(
            super::unescape_path("web_2d1_40x_2eservice"),
            "web-1@x.service"
        );
        assert_eq!(super::unescape_path("_31x_2eservice"), "1x.service");
        assert_eq!(super::unescape_path("odd_"), "odd_");
    }
}
