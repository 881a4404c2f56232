use super::*;
use serde_json::json;

fn etc() -> PathBuf {
    PathBuf::from("/etc")
}

fn spec(toml_text: &str) -> CommandSpec {
    toml::from_str(toml_text).expect("spec parses")
}

fn command(toml_text: &str) -> Command {
    Command::from_spec(spec(toml_text), &etc()).expect("valid spec")
}

fn params(v: serde_json::Value) -> BTreeMap<String, Value> {
    serde_json::from_value(v).expect("params")
}

#[test]
fn specs_are_checked_at_load() {
    let bad = [
        (
            r#"name = "x"
binary = "bin/echo""#,
            "absolute",
        ),
        (
            r#"name = "x"
binary = "/usr/../bin/echo""#,
            "absolute",
        ),
        (
            r#"name = "Bad Name"
binary = "/bin/echo""#,
            "name",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
args = ["{nope}"]"#,
            "not a declared parameter",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
params.a = { type = "unit" }"#,
            "no argument uses it",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
timeout = "2h""#,
            "timeout",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
args = ["{a"]
params.a = { type = "unit" }"#,
            "unclosed",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
args = ["{a}"]
params.a = { type = "string", pattern = "(", max_len = 5 }"#,
            "pattern",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
env = ["PATH=/tmp"]"#,
            "environment",
        ),
        (
            r#"name = "x"
binary = "/bin/echo"
run_as = "no-such-user-here""#,
            "no such user",
        ),
    ];
    for (text, want) in bad {
        let err = Command::from_spec(spec(text), &etc()).expect_err(text);
        assert!(err.to_string().contains(want), "{text}: {err}");
    }
    let unknown_key =
        toml::from_str::<CommandSpec>("name = \"x\"\nbinary = \"/bin/echo\"\nshell = true\n");
    assert!(unknown_key.is_err(), "unknown keys are refused");
}

#[test]
fn values_are_typed_and_injection_is_refused() {
    let cmd = command(
        r#"
name = "greet"
binary = "/bin/echo"
args = ["--", "{word}", "--lines={n}", "{unit}", "{mode}"]
params.word = { type = "string", pattern = "[a-z]+", max_len = 16 }
params.n = { type = "integer", min = 1, max = 100 }
params.unit = { type = "unit" }
params.mode = { type = "enum", values = ["short", "long"] }
"#,
    );
    let ok = cmd
        .render(&params(
            json!({"word": "hello", "n": 5, "unit": "nginx.service", "mode": "short"}),
        ))
        .expect("renders");
    assert_eq!(ok, ["--", "hello", "--lines=5", "nginx.service", "short"]);

    let base = json!({"word": "hello", "n": 5, "unit": "nginx.service", "mode": "short"});
    let attacks = [
        ("word", json!("hello; rm -rf /")),
        ("word", json!("$(id)")),
        ("word", json!("`id`")),
        ("word", json!("a|b")),
        ("word", json!("hello\nworld")),
        ("word", json!("-rf")),
        ("word", json!("x".repeat(17))),
        ("word", json!("hel\u{0}lo")),
        ("word", json!(7)),
        ("n", json!(0)),
        ("n", json!(101)),
        ("n", json!("5")),
        ("n", json!(5.5)),
        ("unit", json!("--output=/etc/passwd")),
        ("unit", json!("../../etc/passwd")),
        ("unit", json!("nginx")),
        ("unit", json!("a b.service")),
        ("unit", json!("x.service\n--root=/")),
        ("unit", json!("@.service")),
        ("unit", json!(format!("{}.service", "a".repeat(260)))),
        ("mode", json!("SHORT")),
        ("mode", json!("short ")),
    ];
    for (param, value) in attacks {
        let mut v = base.clone();
        v[param] = value.clone();
        let err = cmd
            .render(&params(v))
            .expect_err(&format!("{param}={value}"));
        assert!(matches!(err, ExecError::BadParam { .. }), "{err}");
    }
    let mut extra = base.clone();
    extra["env"] = json!("LD_PRELOAD=/tmp/x.so");
    assert!(
        cmd.render(&params(extra)).is_err(),
        "unknown parameters are refused"
    );
    let mut missing = base;
    missing.as_object_mut().expect("object").remove("n");
    assert!(cmd.render(&params(missing)).is_err());
}

#[test]
fn unit_names_follow_systemd_rules() {
    for good in [
        "nginx.service",
        "getty@tty1.service",
        "dev-sda1.device",
        "a:b_c\\x2d.mount",
        "user@1000.service",
    ] {
        assert!(check_unit_name(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "nginx",
        "nginx.servic",
        "-x.service",
        "a@b@c.service",
        "a/b.service",
        "a..service\u{7f}",
    ] {
        assert!(check_unit_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn default_commands_load_and_cannot_be_bent() {
    let list = Whitelist::new(default_specs(), &etc()).expect("defaults load");
    let names: Vec<String> = list.infos().into_iter().map(|i| i.name).collect();
    for want in [
        "uptime",
        "df",
        "free",
        "systemctl-status",
        "journalctl-unit",
        "docker-ps",
        "nvidia-smi",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let journal = list.get("journalctl-unit").expect("journalctl");
    // Options that would read or write files or start a pager cannot be smuggled in.
    for unit in [
        "--output-fields=x",
        "-o",
        "--cursor-file=/tmp/c",
        "--file=/etc/shadow",
        "--pager",
        "x.service --root=/",
    ] {
        assert!(
            journal
                .render(&params(json!({"unit": unit, "lines": 10})))
                .is_err(),
            "{unit}"
        );
    }
    let argv = journal
        .render(&params(json!({"unit": "ssh.service", "lines": 50})))
        .expect("renders");
    assert_eq!(
        argv,
        ["--no-pager", "--quiet", "--lines=50", "--unit=ssh.service"]
    );
    let status = list.get("systemctl-status").expect("status");
    let argv = status
        .render(&params(json!({"unit": "ssh.service"})))
        .expect("renders");
    assert_eq!(argv.last().map(String::as_str), Some("ssh.service"));
    assert_eq!(
        argv[argv.len() - 2],
        "--",
        "option parsing ends before the unit"
    );
}

#[tokio::test]
async fn runs_with_a_cleared_environment_and_closed_stdin() {
    let cmd = command(
        r#"
name = "env"
binary = "/usr/bin/env"
"#,
    );
    let result = run(&cmd, vec![], None).await.expect("runs");
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(
        result.stdout, "",
        "environment must be empty: {}",
        result.stdout
    );

    let cmd = command(
        r#"
name = "env-path"
binary = "/usr/bin/env"
env = ["PATH"]
"#,
    );
    let result = run(&cmd, vec![], None).await.expect("runs");
    assert!(result.stdout.starts_with("PATH="), "{}", result.stdout);
    assert_eq!(result.stdout.lines().count(), 1);

    let cat = command("name = \"cat\"\nbinary = \"/bin/cat\"\n");
    let result = run(&cat, vec![], None).await.expect("runs");
    assert_eq!(result.exit_code, Some(0), "cat sees EOF at once");
    assert!(!result.timed_out);
}

#[tokio::test]
async fn timeout_kills_the_whole_process_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("survivor");
    let cmd = command(&format!(
        r#"
name = "tree"
binary = "/bin/sh"
args = ["-c", "(sleep 3; touch {}) & sleep 30"]
timeout = "500ms"
"#,
        marker.display()
    ));
    let started = Instant::now();
    let argv = cmd.render(&BTreeMap::new()).expect("renders");
    let result = run(&cmd, argv, None).await.expect("runs");
    assert!(result.timed_out);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(result.signal, Some(libc::SIGKILL));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(!marker.exists(), "a background child outlived the timeout");
}

#[tokio::test]
async fn output_cap_holds_against_endless_output() {
    let cmd = command(
        r#"
name = "yes"
binary = "/usr/bin/yes"
output_cap = 4096
timeout = "30s"
"#,
    );
    let started = Instant::now();
    let result = run(&cmd, vec![], None).await.expect("runs");
    assert!(result.stdout_truncated);
    assert_eq!(result.stdout.len(), 4096);
    assert!(
        !result.timed_out,
        "the cap stops the command, not the timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn exit_codes_and_stderr_are_reported() {
    let cmd = command("name = \"ls\"\nbinary = \"/bin/ls\"\n");
    let result = run(&cmd, vec!["/definitely/not/here".into()], None)
        .await
        .expect("runs");
    assert_ne!(result.exit_code, Some(0));
    assert!(
        result.stderr.contains("/definitely/not/here"),
        "{}",
        result.stderr
    );
    let missing = command("name = \"gone\"\nbinary = \"/nonexistent/tool\"\n");
    assert!(!missing.info().available);
    assert_eq!(
        run(&missing, vec![], None).await,
        Err(ExecError::Unavailable("gone".into()))
    );
}

#[test]
fn run_as_resolves_users_and_groups_from_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("passwd"),
        "root:x:0:0::/root:/bin/sh\nsvc:x:1001:1002::/:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        dir.path().join("group"),
        "root:x:0:\nsvc:x:1002:\nlogs:x:4:\n",
    )
    .expect("group");
    assert_eq!(resolve_run_as("svc", dir.path()), Ok((1001, 1002)));
    assert_eq!(resolve_run_as("svc:logs", dir.path()), Ok((1001, 4)));
    assert_eq!(resolve_run_as("1001", dir.path()), Ok((1001, 1002)));
    assert!(resolve_run_as("nobody-here", dir.path()).is_err());
    assert!(resolve_run_as("svc:nogroup", dir.path()).is_err());
}

/// The agent runs as root in production; a `run_as` command must start, as that user, with
/// that group and none of root's supplementary groups.
#[tokio::test]
async fn run_as_runs_as_the_user_without_root_groups() {
    use std::os::unix::fs::MetadataExt;
    let euid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1);
    if euid != 0 {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI runs as root; this test needs it"
        );
        eprintln!("skipped: run_as needs root");
        return;
    }
    for (run_as, uid, groups) in [
        ("nobody", "65534", "65534"),
        ("nobody:daemon", "65534", "1"),
    ] {
        let cmd = command(&format!(
            "name = \"ids\"\nbinary = \"/bin/sh\"\nargs = [\"-c\", \"/usr/bin/id -u; /usr/bin/id -G\"]\nrun_as = \"{run_as}\"\nworking_dir = \"/\"\n"
        ));
        let argv = cmd.render(&BTreeMap::new()).expect("argv");
        let result = run(&cmd, argv, None).await.expect("spawns as another user");
        assert_eq!(result.exit_code, Some(0), "{}", result.stderr);
        let lines: Vec<&str> = result.stdout.lines().collect();
        assert_eq!(lines, [uid, groups], "run_as {run_as}: {result:?}");
    }
}
