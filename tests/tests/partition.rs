//! Partitions and slow links: an agent in a network namespace the test makes (a veth pair,
//! nftables in the namespace for a partition and for packet loss, a relay on the host side for
//! latency and for a link that takes TCP but never answers TLS; this kernel has no `netem`).
//! The agent comes back by itself after each fault, API requests in flight fail with 503 or 504
//! within the control plane's deadline, never hang, and the audit records the agent made
//! during a fault reach the control plane once each, in order. Needs root (namespaces).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axon_e2e::relay::{Mode, Relay};
use axon_e2e::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// How long the control plane waits for an agent's answer (its default).
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The control plane's ping interval here; a link is dead after three missed pings.
const PING: Duration = Duration::from_secs(5);
/// A command may run for minutes, so the API waits for it as long as the link lives: a
/// command in flight fails once the link is known dead.
const LINK_DEAD: Duration = Duration::from_secs(4 * 5);
/// A request in flight must end within the deadline plus this.
const SLACK: Duration = Duration::from_secs(3);
const AGENT_FLAGS: [&str; 4] = ["--backoff-initial", "200ms", "--backoff-max", "2s"];

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with one veth link to the host; `localhost` inside it names the host's end, so
/// the agent dials the relay with the name its server certificate carries.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

impl Netns {
    fn create() -> Self {
        let id = std::process::id() % 100_000;
        let name = format!("axp{id}");
        let host_if = format!("axh{id}");
        let peer_if = format!("axn{id}");
        let subnet = format!("10.213.{}", id % 250);
        let host_ip = format!("{subnet}.1");
        let ns = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: host_ip.clone(),
        };
        let made = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "cannot make a network namespace: this test needs root"
        );
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ],
        );
        run("ip", &["link", "set", &peer_if, "netns", &name]);
        run(
            "ip",
            &["addr", "add", &format!("{host_ip}/24"), "dev", &host_if],
        );
        run("ip", &["link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", name.as_str()];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        inside(&["addr", "add", &format!("{subnet}.2/24"), "dev", &peer_if]);
        inside(&["link", "set", &peer_if, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // `ip netns exec` mounts these files over /etc for the processes it starts.
        let etc = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        std::fs::write(format!("{etc}/hosts"), format!("{host_ip} localhost\n")).expect("hosts");
        ns
    }

    fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Loads nftables rules inside the namespace (replacing earlier ones).
    fn fault(&self, rules: &str) {
        self.clear();
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write;
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(format!("table inet axfault {{\n{rules}\n}}\n").as_bytes())
            .expect("rules");
        assert!(nft.wait().expect("nft").success(), "nft refused: {rules}");
    }

    /// Everything on the link is dropped, silently (no resets): a partition.
    fn partition(&self) {
        self.fault(
            "chain i { type filter hook input priority 0; iifname \"lo\" accept; drop; }\n\
             chain o { type filter hook output priority 0; oifname \"lo\" accept; drop; }",
        );
    }

    /// One packet in ten dropped, each way.
    fn lossy(&self) {
        self.fault(
            "chain i { type filter hook input priority 0; numgen random mod 10 0 drop; }\n\
             chain o { type filter hook output priority 0; numgen random mod 10 0 drop; }",
        );
    }

    fn clear(&self) {
        let _ = Command::new("ip")
            .args([
                "netns", "exec", &self.name, "nft", "delete", "table", "inet", "axfault",
            ])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Usually gone with the namespace (a veth pair goes with either end).
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

async fn status_of(cp: &ControlPlane, admin: &str, host: &str) -> String {
    cp.host(admin, host).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn until_status(cp: &ControlPlane, admin: &str, host: &str, want: &str, limit: Duration) {
    let reached = wait_until(limit, || async { status_of(cp, admin, host).await == want }).await;
    assert!(reached.is_some(), "host not {want} within {limit:?}");
}

/// Sends `POST /api/hosts/{host}/{what}`; the status and how long it took. The client itself
/// waits far longer than any deadline, so a hang would show.
async fn call(
    cp: &ControlPlane,
    admin: &str,
    host: &str,
    what: &str,
    body: Value,
) -> (StatusCode, Duration) {
    let started = Instant::now();
    let answer = cp
        .client
        .post(cp.url(&format!("/api/hosts/{host}/{what}")))
        .bearer_auth(admin)
        .json(&body)
        .timeout(Duration::from_secs(90))
        .send()
        .await
        .expect("the API answers");
    (answer.status(), started.elapsed())
}

/// Runs a whitelisted command (an audit record on the agent).
async fn exec(cp: &ControlPlane, admin: &str, host: &str) -> (StatusCode, Duration) {
    call(cp, admin, host, "exec", json!({"command": "uptime"})).await
}

/// A ping through the link, answered within the agent deadline or not at all.
async fn ping(cp: &ControlPlane, admin: &str, host: &str) -> (StatusCode, Duration) {
    call(cp, admin, host, "ping", json!({})).await
}

fn assert_failed_in_time(status: StatusCode, took: Duration, deadline: Duration, during: &str) {
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{during}: {status}"
    );
    assert!(took <= deadline + SLACK, "{during}: took {took:?}");
}

/// Every record of the agent's trail is kept by the control plane once, in order.
async fn exactly_once(cp: &ControlPlane, admin: &str, agent: &Agent, after: &str) {
    let host = &agent.host_id;
    let same = wait_until(Duration::from_secs(30), || async {
        kept_seqs(cp, admin, host).await == agent.trail_seqs()
    })
    .await;
    let mine = agent.trail_seqs();
    assert!(
        same.is_some(),
        "after {after}: agent {mine:?}, kept {:?}",
        kept_seqs(cp, admin, host).await
    );
    let expected: Vec<u64> = (1..=mine.len() as u64).collect();
    assert_eq!(mine, expected, "after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_behind_a_partition_a_lossy_a_slow_and_a_silent_link_comes_back_and_loses_nothing()
{
    let ping_flag = format!("{}s", PING.as_secs());
    let cp = ControlPlane::start(&["--ping-interval", &ping_flag]).await;
    let admin = cp.admin_token().await;
    let ns = Netns::create();
    let relay = Relay::start(
        format!("{}:{}", ns.host_ip, cp.agent_port)
            .parse::<SocketAddr>()
            .expect("addr"),
        SocketAddr::from(([127, 0, 0, 1], cp.agent_port)),
    )
    .await
    .expect("relay");
    let mut agent = Agent::enroll(&cp).await;
    let host = agent.host_id.clone();
    agent.start_wrapped(&ns.wrapper(), &AGENT_FLAGS, &[]);
    until_status(&cp, &admin, &host, "online", Duration::from_secs(15)).await;
    let (status, _) = exec(&cp, &admin, &host).await;
    assert_eq!(status, StatusCode::OK, "{}", agent.log());

    // A 30 s partition. A request sent into it fails within the deadline.
    let cut = Instant::now();
    ns.partition();
    let ((status, took), (exec_status, exec_took)) =
        tokio::join!(ping(&cp, &admin, &host), exec(&cp, &admin, &host));
    assert_failed_in_time(status, took, AGENT_TIMEOUT, "a ping into the partition");
    assert_failed_in_time(
        exec_status,
        exec_took,
        LINK_DEAD,
        "a command into the partition",
    );
    eprintln!("partition: ping {status} after {took:?}, command {exec_status} after {exec_took:?}");
    // Three missed pings: offline, and then requests fail at once.
    until_status(&cp, &admin, &host, "offline", Duration::from_secs(25)).await;
    let (status, took) = exec(&cp, &admin, &host).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < Duration::from_secs(2),
        "offline answered in {took:?}"
    );
    // The agent restarts behind the partition: its start is a record made there.
    let before = agent.trail_seqs().len();
    agent.stop();
    agent.start_wrapped(&ns.wrapper(), &AGENT_FLAGS, &[]);
    let recorded = wait_until(Duration::from_secs(10), || async {
        agent.trail_seqs().len() > before
    })
    .await;
    assert!(recorded.is_some(), "{}", agent.log());
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed())).await;
    ns.clear();
    let healed = Instant::now();
    until_status(&cp, &admin, &host, "online", Duration::from_secs(20)).await;
    eprintln!(
        "partition: online again {:?} after it ended",
        healed.elapsed()
    );
    exactly_once(&cp, &admin, &agent, "the partition").await;

    // One packet in ten lost: commands mostly succeed; none hangs.
    ns.lossy();
    let mut ok = 0;
    for _ in 0..20 {
        let (status, took) = exec(&cp, &admin, &host).await;
        if status == StatusCode::OK {
            ok += 1;
        } else {
            assert_failed_in_time(status, took, LINK_DEAD, "10 % loss");
        }
    }
    ns.clear();
    assert!(
        ok >= 10,
        "only {ok} of 20 commands succeeded over a lossy link"
    );
    eprintln!("10 % loss: {ok} of 20 commands succeeded");
    until_status(&cp, &admin, &host, "online", Duration::from_secs(20)).await;
    exactly_once(&cp, &admin, &agent, "10 % loss").await;

    // 2 s each way: slow, still working, still online.
    relay.set(Mode::Delay(Duration::from_secs(2)));
    let (status, took) = exec(&cp, &admin, &host).await;
    assert_eq!(status, StatusCode::OK, "over a slow link");
    assert!(
        took >= Duration::from_secs(4) && took <= AGENT_TIMEOUT,
        "round trip through the slow link: {took:?}"
    );
    assert_eq!(status_of(&cp, &admin, &host).await, "online");
    eprintln!("2 s each way: a command took {took:?}");
    relay.set(Mode::Pass);

    // A link that takes TCP and never answers TLS: the agent gives up on each attempt and
    // tries again; once the link answers, it is back by itself.
    relay.set(Mode::Silent);
    agent.stop();
    until_status(&cp, &admin, &host, "offline", Duration::from_secs(20)).await;
    let tried = relay.accepted();
    agent.start_wrapped(&ns.wrapper(), &AGENT_FLAGS, &[]);
    let retried = wait_until(Duration::from_secs(30), || async {
        relay.accepted() >= tried + 2
    })
    .await;
    assert!(
        retried.is_some(),
        "the agent hung on a silent link\n{}",
        agent.log()
    );
    let (status, took) = ping(&cp, &admin, &host).await;
    assert_failed_in_time(status, took, Duration::ZERO, "silent link, host offline");
    eprintln!(
        "silent link: {} attempts in {:?}",
        relay.accepted() - tried,
        retried.unwrap_or_default()
    );
    relay.set(Mode::Pass);
    let answered = Instant::now();
    until_status(&cp, &admin, &host, "online", Duration::from_secs(30)).await;
    eprintln!(
        "silent link: online {:?} after it answered",
        answered.elapsed()
    );
    let (status, _) = exec(&cp, &admin, &host).await;
    assert_eq!(status, StatusCode::OK);
    exactly_once(&cp, &admin, &agent, "the silent link").await;
}
