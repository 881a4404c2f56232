//! Change notifications for the jail roots (inotify through `notify`): each change becomes a
//! `watch` event on the link, addressed as `<root>/<relative path>`. Live only: changes that
//! happen while the link is down are not replayed, and a burst beyond the buffer is reported as
//! one `overflow` event.

use std::path::PathBuf;

use notify::{EventKind, RecursiveMode, Watcher};
use serde::Serialize;
use tokio::sync::broadcast;

/// Changes buffered per subscriber.
const BUFFER: usize = 1024;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `<root>/<relative path>`.
    pub path: String,
    /// `create`, `modify`, `remove`, `rename`, `other` or `overflow`.
    pub kind: String,
}

/// Watches the roots for the agent's lifetime.
pub struct RootWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    tx: broadcast::Sender<Change>,
}

impl RootWatcher {
    /// Starts watching `(name, path)` roots; a root that cannot be watched is logged, not fatal.
    pub fn start(roots: &[(String, PathBuf)]) -> Self {
        // A broadcast channel allocates its slots up front (some 70 KiB for 1,024 changes):
        // with nothing to watch, nothing will be sent.
        if roots.is_empty() {
            let (tx, _) = broadcast::channel(1);
            return Self { _watcher: None, tx };
        }
        let (tx, _) = broadcast::channel(BUFFER);
        let sender = tx.clone();
        let names: Vec<(String, PathBuf)> = roots
            .iter()
            .map(|(n, p)| (n.clone(), p.canonicalize().unwrap_or_else(|_| p.clone())))
            .collect();
        let resolve = names.clone();
        let handler = move |result: notify::Result<notify::Event>| {
            let event = match result {
                // An event without paths is the kernel's queue overflowing: changes were lost.
                Ok(event) if !event.paths.is_empty() => event,
                _ => {
                    let _ = sender.send(Change {
                        path: String::new(),
                        kind: "overflow".into(),
                    });
                    return;
                }
            };
            let kind = match event.kind {
                EventKind::Create(_) => "create",
                EventKind::Modify(notify::event::ModifyKind::Name(_)) => "rename",
                EventKind::Modify(_) => "modify",
                EventKind::Remove(_) => "remove",
                EventKind::Access(_) => return,
                _ => "other",
            };
            for path in event.paths {
                let Some(address) = resolve.iter().find_map(|(name, root)| {
                    path.strip_prefix(root).ok().map(|rel| {
                        if rel.as_os_str().is_empty() {
                            name.clone()
                        } else {
                            format!("{name}/{}", rel.display())
                        }
                    })
                }) else {
                    continue;
                };
                let _ = sender.send(Change {
                    path: address,
                    kind: kind.to_owned(),
                });
            }
        };
        // Symlinks are not followed: a link to a directory outside a root must not report (or
        // walk) what lies outside.
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = match notify::RecommendedWatcher::new(handler, config) {
            Ok(mut w) => {
                for (name, path) in &names {
                    if let Err(e) = w.watch(path, RecursiveMode::Recursive) {
                        tracing::warn!(root = %name, error = %e, "cannot watch jail root");
                    }
                }
                Some(w)
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable");
                None
            }
        };
        Self {
            _watcher: watcher,
            tx,
        }
    }

    /// A new subscription to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_inside_roots_are_reported_by_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watcher = RootWatcher::start(&[("www".into(), dir.path().to_path_buf())]);
        let mut rx = watcher.subscribe();
        std::fs::write(dir.path().join("new.txt"), "x").expect("write");
        let change = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let c = rx.recv().await.expect("change");
                if c.path == "www/new.txt" {
                    return c;
                }
            }
        })
        .await
        .expect("a change in time");
        assert!(
            ["create", "modify"].contains(&change.kind.as_str()),
            "{change:?}"
        );
    }
}
