//! `agentd`: the Axon host agent's command line.
#![allow(clippy::print_stdout)] // printing results is this binary's job

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agentd::config::FileConfig;
use agentd::{AgentConfig, enroll, state::StateDir};
use anyhow::Context;
use axon_shared::parse_duration;
use clap::{Args, Parser, Subcommand};

/// Axon host agent: dials out to the control plane over mutual TLS.
#[derive(Parser)]
#[command(name = "agentd", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll this host: make a key pair here and trade a token for a certificate.
    Enroll(EnrollArgs),
    /// Connect to the control plane and serve it until stopped.
    Run(RunArgs),
    /// Work with the local audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write manual pages or a shell completion script (for packaging).
    #[command(hide = true)]
    Generate(axon_shared::cli::GenerateArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of an audit file; names the first broken line.
    Verify(VerifyArgs),
}

#[derive(Args)]
struct VerifyArgs {
    /// The file to check (default: audit.jsonl in the state dir).
    file: Option<PathBuf>,
    #[arg(long, env = "AGENTD_STATE_DIR", default_value = "/var/lib/agentd")]
    state_dir: PathBuf,
}

#[derive(Args)]
struct EnrollArgs {
    /// The control plane's API URL, e.g. https://cp.example.com:8443.
    #[arg(long, env = "AGENTD_SERVER")]
    server: String,
    /// Enrollment token from `POST /api/enrollment-tokens`.
    #[arg(long, env = "AGENTD_TOKEN", hide_env_values = true)]
    token: String,
    /// Where to store the key, certificate and CA.
    #[arg(long, env = "AGENTD_STATE_DIR", default_value = "/var/lib/agentd")]
    state_dir: PathBuf,
    /// Name to register the host under (default: the hostname).
    #[arg(long)]
    hostname: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// TOML configuration file; flags and AGENTD_* variables override it.
    #[arg(long, env = "AGENTD_CONFIG")]
    config: Option<PathBuf>,
    /// State dir made by `agentd enroll`.
    #[arg(long, env = "AGENTD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Dial this URL instead of the one received at enrollment.
    #[arg(long, env = "AGENTD_AGENT_URL")]
    agent_url: Option<String>,
    /// First reconnect delay ceiling (doubles up to --backoff-max, full jitter).
    #[arg(long, env = "AGENTD_BACKOFF_INITIAL", value_parser = parse_duration)]
    backoff_initial: Option<Duration>,
    /// Largest reconnect delay ceiling.
    #[arg(long, env = "AGENTD_BACKOFF_MAX", value_parser = parse_duration)]
    backoff_max: Option<Duration>,
    /// Largest frame accepted from the control plane, in bytes.
    #[arg(long, env = "AGENTD_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// A file-jail root, NAME=PATH:ro|rw (repeatable; adds to the config file's roots).
    #[arg(long = "jail", value_parser = agentd::jail::RootSpec::parse_flag)]
    jails: Vec<agentd::jail::RootSpec>,
    /// Allow service actions, KIND:ACTIONS:PATTERN (repeatable), e.g.
    /// systemd:start,stop,restart:web-*.service
    #[arg(long = "allow", value_parser = agentd::services::AllowRule::parse_flag)]
    allow: Vec<agentd::services::AllowRule>,
    /// Read unit logs from this journal directory instead of the system journal.
    #[arg(long, env = "AGENTD_JOURNAL_DIR")]
    journal_dir: Option<PathBuf>,
    /// How often capabilities (systemd, Docker, GPU, model servers) are detected again.
    #[arg(long, env = "AGENTD_CAPABILITIES_INTERVAL", value_parser = parse_duration)]
    capabilities_interval: Option<Duration>,
    /// How often a host sample is taken and sent (1s to 1h; default 5s).
    #[arg(long, env = "AGENTD_METRICS_INTERVAL", value_parser = parse_duration)]
    metrics_interval: Option<Duration>,
    /// Include the busiest processes (by CPU and by memory) in samples.
    #[arg(long, env = "AGENTD_TOP_PROCESSES")]
    top_processes: bool,
    /// Where Ollama listens (default 127.0.0.1:11434).
    #[arg(long, env = "AGENTD_OLLAMA_ADDRESS")]
    ollama_address: Option<String>,
    /// Where the Automatic1111 / SDXL web UI listens (default 127.0.0.1:7860).
    #[arg(long, env = "AGENTD_SDXL_ADDRESS")]
    sdxl_address: Option<String>,
    /// Forward the control plane's requests to the model servers (allowlisted paths only);
    /// true or false (default true).
    #[arg(long, env = "AGENTD_MODEL_FORWARDING", value_parser = clap::builder::BoolishValueParser::new())]
    model_forwarding: Option<bool>,
    /// How long a model server may take to answer a forwarded request (default 300s).
    #[arg(long, env = "AGENTD_MODEL_HEADER_TIMEOUT", value_parser = parse_duration)]
    model_header_timeout: Option<Duration>,
}

fn main() -> ExitCode {
    agentd::sys::one_malloc_arena();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One thread runs the agent's tasks; blocking work (files, probes, the audit writer) has
/// threads of its own. A second scheduler thread cost a thread's stack and arena, and the
/// multi-threaded scheduler pulled in libm, for no gain at an agent's load.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Enroll(args) => {
            let hostname = args
                .hostname
                .or_else(|| sysinfo::System::host_name().ok())
                .unwrap_or_else(|| "unnamed-host".into());
            let state = StateDir::new(&args.state_dir);
            let enrolled = runtime()?.block_on(enroll::enroll(
                &args.server,
                &args.token,
                &state,
                &hostname,
            ))?;
            println!("Enrolled as host {}", enrolled.host_id);
            println!("  state dir: {}", args.state_dir.display());
            println!("  agent link: {}", enrolled.agent_url);
            Ok(())
        }
        Command::Generate(args) => Ok(args.run(<Cli as clap::CommandFactory>::command())?),
        Command::Audit(AuditCommand::Verify(args)) => {
            match args.file {
                Some(file) => {
                    let count = agentd::audit::verify(&file)?;
                    println!("{}: {count} records, chain intact", file.display());
                }
                None => {
                    let verified = agentd::audit::verify_trail(&args.state_dir)?;
                    println!(
                        "{}: {} records in {} files, chain intact{}",
                        args.state_dir.display(),
                        verified.records,
                        verified.files,
                        verified
                            .head
                            .map(|seq| format!(", ends at its signed head (record {seq})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::Run(args) => {
            let mut config = AgentConfig::new(PathBuf::from("/var/lib/agentd"));
            if let Some(path) = &args.config {
                FileConfig::load(path)?.apply(&mut config)?;
            }
            if let Some(v) = args.state_dir {
                config.state_dir = v;
            }
            if let Some(v) = args.agent_url {
                config.agent_url = Some(v);
            }
            if let Some(v) = args.backoff_initial {
                config.backoff_initial = v;
            }
            if let Some(v) = args.backoff_max {
                config.backoff_max = v;
            }
            if let Some(v) = args.max_frame_bytes {
                config.max_frame_bytes = v;
            }
            if let Some(v) = args.journal_dir {
                config.journal_dir = Some(v);
            }
            if let Some(v) = args.capabilities_interval {
                config.capabilities_interval = v;
            }
            if let Some(v) = args.metrics_interval {
                config.metrics_interval = v;
            }
            if args.top_processes {
                config.top_processes = true;
            }
            if let Some(v) = args.ollama_address {
                config.ollama_address = v;
            }
            if let Some(v) = args.sdxl_address {
                config.sdxl_address = v;
            }
            if let Some(v) = args.model_forwarding {
                config.model_forwarding = v;
            }
            if let Some(v) = args.model_header_timeout {
                config.model_header_timeout = v;
            }
            config.jails.extend(args.jails);
            config.allow.extend(args.allow);
            runtime()?.block_on(agentd::run(config, shutdown_signal()))?;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
