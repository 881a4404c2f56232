//! Nothing acknowledged is lost: axon-cp killed with SIGKILL at random moments while a writer
//! creates users, tenants, API keys, orders and webhook subscriptions, and agentd killed while
//! it writes audit records. Rounds: `AXON_CRASH_ROUNDS` (default 20); the random moments come
//! from a seed printed at the start (`AXON_CRASH_SEED` replays one).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axon_e2e::writes::{Acked, KINDS, check_all, spawn_writers};
use axon_e2e::*;
use serde_json::json;

/// A small xorshift: the kill moments need to vary, not to be unpredictable.
struct Dice(u64);

impl Dice {
    fn from_env() -> Self {
        let seed = std::env::var("AXON_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            })
            | 1;
        eprintln!("AXON_CRASH_SEED={seed}");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn verify_cp_trail(cp: &ControlPlane) -> String {
    let out = std::process::Command::new(bin("axon-cp"))
        .args(["audit-verify", "--data-dir"])
        .arg(cp.data_dir())
        .output()
        .expect("audit-verify");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the control plane's trail does not verify: {}{said}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

fn verify_agent_trail(agent: &Agent) -> usize {
    let out = std::process::Command::new(bin("agentd"))
        .args(["audit", "verify"])
        .arg(agent.state_dir().join("audit.jsonl"))
        .output()
        .expect("agentd audit verify");
    assert!(
        out.status.success(),
        "the agent's trail does not verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.trail_seqs().len()
}

fn rounds() -> usize {
    env_count("AXON_CRASH_ROUNDS", 20)
}

const AGENT_FLAGS: [&str; 4] = ["--backoff-initial", "50ms", "--backoff-max", "500ms"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axon_cp_killed_under_writes_keeps_every_acknowledged_change() {
    let mut dice = Dice::from_env();
    let mut cp = ControlPlane::start_with_env(&[], &[("AXON_LOG", "warn")]).await;
    let admin = cp.admin_token().await;
    let tenant = cp.create_tenant(&admin, "crash-home").await;
    // An agent stays linked throughout, so the control plane's trail also takes its records.
    let mut agent = Agent::enroll(&cp).await;
    agent.start(&AGENT_FLAGS);

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let writers = spawn_writers(&cp, &admin, &tenant, 4, &acked, &stop);
    let count = || acked.lock().expect("acked").len();
    for round in 0..rounds() {
        // Some changes acknowledged since the restart, then a kill at a random moment.
        let before = count();
        let moving = wait_until(Duration::from_secs(30), || async { count() >= before + 5 }).await;
        assert!(
            moving.is_some(),
            "round {round}: no change acknowledged\n{}",
            cp.log()
        );
        tokio::time::sleep(Duration::from_millis(dice.below(300))).await;
        cp.kill9();
        verify_cp_trail(&cp);
        cp.spawn().await;
        let snapshot = acked.lock().expect("acked").clone();
        check_all(&cp, &admin, &snapshot).await;
    }
    let _ = stop_tx.send(true);
    for w in writers {
        w.await.expect("writer");
    }
    let all = acked.lock().expect("acked").clone();
    check_all(&cp, &admin, &all).await;
    for kind in KINDS {
        assert!(
            all.iter().any(|a| a.kind == kind),
            "no {kind:?} was ever acknowledged"
        );
    }
    // The agent's records reached the trail once each, and both trails verify.
    let host = agent.host_id.clone();
    let caught_up = wait_until(Duration::from_secs(20), || async {
        kept_seqs(&cp, &admin, &host).await == agent.trail_seqs()
    })
    .await;
    assert!(
        caught_up.is_some(),
        "agent {:?} vs kept {:?}",
        agent.trail_seqs(),
        kept_seqs(&cp, &admin, &host).await
    );
    agent.stop();
    verify_agent_trail(&agent);
    assert!(cp.terminate().is_some_and(|s| s.success()));
    let said = verify_cp_trail(&cp);
    eprintln!(
        "{} rounds, {} changes acknowledged and found intact; {said}",
        rounds(),
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_killed_while_writing_audit_records_delivers_each_once_in_order() {
    let mut dice = Dice::from_env();
    let cp = ControlPlane::start_with_env(&[], &[("AXON_LOG", "warn")]).await;
    let admin = cp.admin_token().await;
    let mut agent = Agent::enroll(&cp).await;
    let host = agent.host_id.clone();
    for round in 0..rounds() {
        agent.start(&AGENT_FLAGS);
        let online = wait_until(Duration::from_secs(10), || async {
            cp.host(&admin, &host).await["status"] == "online"
        })
        .await;
        assert!(
            online.is_some(),
            "round {round}: not online\n{}",
            agent.log()
        );
        // Commands run (each one an audit record on the agent) while it is killed.
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let drivers: Vec<_> = (0..2)
            .map(|_| {
                let client = cp.client.clone();
                let url = cp.url(&format!("/api/hosts/{host}/exec"));
                let token = admin.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        let _ = client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"command": "uptime"}))
                            .timeout(Duration::from_secs(3))
                            .send()
                            .await;
                    }
                })
            })
            .collect();
        let before = agent.trail_seqs().len();
        let writing = wait_until(Duration::from_secs(10), || async {
            agent.trail_seqs().len() >= before + 3
        })
        .await;
        assert!(
            writing.is_some(),
            "round {round}: no records\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(dice.below(150))).await;
        agent.stop();
        let _ = stop_tx.send(true);
        for d in drivers {
            d.await.expect("driver");
        }
    }
    // Back once more: everything it wrote reaches the control plane, once, in order.
    agent.start(&AGENT_FLAGS);
    let caught_up = wait_until(Duration::from_secs(30), || async {
        let mine = agent.trail_seqs();
        !mine.is_empty() && kept_seqs(&cp, &admin, &host).await == mine
    })
    .await;
    let mine = agent.trail_seqs();
    let kept = kept_seqs(&cp, &admin, &host).await;
    assert!(caught_up.is_some(), "agent {mine:?}\nkept {kept:?}");
    let expected: Vec<u64> = (1..=mine.len() as u64).collect();
    assert_eq!(mine, expected, "the agent's own trail is gap-free");
    assert!(kept.len() < 1000, "more records than one page reads");
    agent.stop();
    let records = verify_agent_trail(&agent);
    eprintln!(
        "{} kills, {records} agent records, each kept once and in order",
        rounds()
    );
}
