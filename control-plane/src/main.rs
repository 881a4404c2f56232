//! `axon-cp`: the Axon control plane's command line.
#![allow(clippy::print_stdout)] // printing results is this binary's job

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use axon_control_plane::init::{InitOptions, default_sans, init};
use axon_control_plane::model::Role;
use axon_control_plane::{Listeners, ServeConfig, run};
use axon_shared::parse_duration;
use clap::{Args, Parser, Subcommand};

/// Axon control plane: REST API, fleet registry and the agents' endpoint.
#[derive(Parser)]
#[command(name = "axon-cp", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data dir: store, internal CA, server certificate and the first admin.
    Init(InitArgs),
    /// Serve the API and the agents' endpoint.
    Serve(ServeArgs),
    /// Manage enrollment tokens on a stopped server's data dir.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage users on a stopped server's data dir.
    #[command(subcommand)]
    User(UserCommand),
    /// Check the hash chain of the audit trail on a stopped server's data dir.
    AuditVerify(DataDirArg),
    /// Add a new JWT signing key (takes effect at the next start; old tokens stay valid until
    /// they expire).
    RotateSigningKey(DataDirArg),
    /// Load the demo tenants, users, catalog and orders into a stopped server's data dir
    /// (idempotent), or remove them with --remove.
    SeedDemo(SeedDemoArgs),
    /// Back up a data dir (store, CA, signing keys, audit trail) into one file, while its
    /// server runs or not. The file holds every secret of the control plane; it is written 0600.
    Backup(BackupArgs),
    /// Restore a backup into an empty (or new) data dir.
    Restore(RestoreArgs),
    /// Write manual pages or a shell completion script (for packaging).
    #[command(hide = true)]
    Generate(axon_shared::cli::GenerateArgs),
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// The backup file to write (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct RestoreArgs {
    /// A file written by `axon-cp backup`.
    #[arg(long)]
    from: PathBuf,
    /// The data dir to make; it must be empty or absent.
    #[arg(long, env = "AXON_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct SeedDemoArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Remove the demo records instead (only records the seeder made).
    #[arg(long)]
    remove: bool,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; prints a generated password unless AXON_USER_PASSWORD is set.
    Create(UserCreateArgs),
    /// List users.
    List(DataDirArg),
    /// Disable a user and end their sessions.
    Disable(UserEmailArgs),
    /// Set a new password (generated unless AXON_USER_PASSWORD is set), enable the user and end
    /// their sessions.
    ResetPassword(UserEmailArgs),
}

#[derive(Args)]
struct DataDirArg {
    /// Data directory made by `axon-cp init` (its server must be stopped).
    #[arg(long, env = "AXON_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct UserCreateArgs {
    #[command(flatten)]
    dir: DataDirArg,
    #[arg(long)]
    email: String,
    #[arg(long, default_value = "")]
    name: String,
    /// admin, operator, viewer or client.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Tenant slug, for client users.
    #[arg(long)]
    tenant: Option<String>,
    /// A client without a tenant, who sees the legacy orders (those without a tenant).
    #[arg(long, conflicts_with = "tenant")]
    legacy: bool,
}

#[derive(Args)]
struct UserEmailArgs {
    #[command(flatten)]
    dir: DataDirArg,
    #[arg(long)]
    email: String,
}

fn parse_role(text: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| format!("unknown role {text:?}: use admin, operator, viewer or client"))
}

fn password_from_env() -> Option<String> {
    std::env::var("AXON_USER_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a single-use enrollment token and print it.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// Data directory made by `axon-cp init` (its server must be stopped).
    #[arg(long, env = "AXON_DATA_DIR")]
    data_dir: PathBuf,
    /// How long the token stays valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
    /// Label for the host that enrolls with it, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("label {text:?} must be KEY=VALUE"))
}

#[derive(Args)]
struct InitArgs {
    /// Data directory to create.
    #[arg(long, env = "AXON_DATA_DIR")]
    data_dir: PathBuf,
    /// Email of the first admin.
    #[arg(long, env = "AXON_ADMIN_EMAIL", default_value = "admin@axon.local")]
    admin_email: String,
    /// Name or address the server certificate is valid for (repeatable; default: localhost,
    /// 127.0.0.1, ::1 and this host's name).
    #[arg(long = "san")]
    sans: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory made by `axon-cp init`.
    #[arg(long, env = "AXON_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the API listener.
    #[arg(long, env = "AXON_API_LISTEN", default_value = "0.0.0.0:8443")]
    api_listen: SocketAddr,
    /// Address of the agents' listener (mutual TLS).
    #[arg(long, env = "AXON_AGENT_LISTEN", default_value = "0.0.0.0:7443")]
    agent_listen: SocketAddr,
    /// Serve the API over plain HTTP; refused unless the API listener is on loopback.
    #[arg(long, env = "AXON_INSECURE_HTTP")]
    insecure_http: bool,
    /// URL agents dial, handed out at enrollment (default: derived from the request).
    #[arg(long, env = "AXON_AGENT_URL")]
    agent_url: Option<String>,
    /// Interval of liveness pings on the agent link; a host is offline after three missed.
    #[arg(long, env = "AXON_PING_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Largest agent-link frame accepted, in bytes.
    #[arg(long, env = "AXON_MAX_FRAME_BYTES", default_value_t = axon_shared::DEFAULT_MAX_FRAME)]
    max_frame_bytes: usize,
    /// How long the per-minute metrics history is kept (at least 1h).
    #[arg(long, env = "AXON_METRICS_RETENTION", default_value = "7d", value_parser = parse_duration)]
    metrics_retention: Duration,
    /// Free space (MiB) kept on the data dir's filesystem: below it, changes are refused
    /// with 503 while reads go on.
    #[arg(long, env = "AXON_MIN_FREE_MB", default_value_t = 64)]
    min_free_mb: u64,
    /// Lifetime of agent certificates.
    #[arg(long, env = "AXON_CERT_LIFETIME", default_value = "30d", value_parser = parse_duration)]
    cert_lifetime: Duration,
    /// Lifetime of access tokens.
    #[arg(long, env = "AXON_ACCESS_TTL", default_value = "15m", value_parser = parse_duration)]
    access_ttl: Duration,
    /// LLM gateway providers, aliases and prices (TOML). Keys in OPENAI_API_KEY,
    /// GEMINI_API_KEY and DEEPSEEK_API_KEY make those providers usable without a file.
    #[arg(long, env = "AXON_LLM_CONFIG")]
    llm_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axon-cp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AXON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::Init(args) => {
            let sans = if args.sans.is_empty() {
                default_sans()
            } else {
                args.sans
            };
            let report = init(InitOptions {
                data_dir: args.data_dir,
                admin_email: args.admin_email,
                admin_password: std::env::var("AXON_ADMIN_PASSWORD")
                    .ok()
                    .filter(|p| !p.is_empty()),
                sans,
            })?;
            println!("Initialised {}", report.data_dir.display());
            println!("  CA fingerprint (SHA-256): {}", report.ca_fingerprint);
            println!("  server certificate names: {}", report.sans.join(", "));
            println!("  admin: {}", report.admin_email);
            match report.generated_password {
                Some(p) => println!("  admin password: {p}   (shown once; store it now)"),
                None => println!("  admin password: from AXON_ADMIN_PASSWORD"),
            }
            Ok(())
        }
        Command::Generate(args) => Ok(args.run(<Cli as clap::CommandFactory>::command())?),
        Command::Serve(args) => serve(args),
        Command::Backup(args) => backup(&args.dir.data_dir, &args.out),
        Command::Restore(args) => {
            let s = axon_control_plane::backup::restore(&args.from, &args.data_dir)?;
            println!(
                "restored into {}: {} store entries in {} trees, {} files; start it with `axon-cp serve --data-dir {}`",
                args.data_dir.display(),
                s.entries,
                s.trees,
                s.files,
                args.data_dir.display()
            );
            Ok(())
        }
        Command::User(cmd) => user_command(cmd),
        Command::AuditVerify(a) => {
            let check = axon_control_plane::offline::verify_audit(&a.data_dir)?;
            println!(
                "audit trail: {} records, chain intact; {} records in {} files up to the signed head{}",
                check.indexed,
                check.file.records,
                check.file.files,
                check
                    .file
                    .head
                    .map(|seq| format!(" (record {seq})"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::RotateSigningKey(a) => {
            let count = axon_control_plane::offline::rotate_signing_key(&a.data_dir)?;
            println!("new signing key added ({count} stored); restart axon-cp to sign with it");
            Ok(())
        }
        Command::SeedDemo(a) => {
            let report = if a.remove {
                axon_control_plane::offline::remove_demo(&a.dir.data_dir)?
            } else {
                axon_control_plane::offline::seed_demo(&a.dir.data_dir)?
            };
            print_demo(&report);
            Ok(())
        }
        Command::Token(TokenCommand::Create(args)) => {
            let created = axon_control_plane::fleet::enrollment::create_offline(
                &args.data_dir,
                args.ttl.as_secs(),
                args.labels.into_iter().collect(),
            )?;
            println!("{}", created.token);
            Ok(())
        }
    }
}

fn print_demo(report: &axon_control_plane::agency::demo::DemoReport) {
    for (label, list) in [
        ("created", &report.created),
        ("unchanged", &report.unchanged),
        ("removed", &report.removed),
        ("skipped", &report.skipped),
    ] {
        if !list.is_empty() {
            println!("{label}: {}", list.len());
            for item in list {
                println!("  {item}");
            }
        }
    }
    for login in &report.credentials {
        println!(
            "client of {} ({}): {} / {}   (shown once)",
            login.tenant, login.portal, login.email, login.password
        );
    }
}

fn user_command(cmd: UserCommand) -> anyhow::Result<()> {
    use axon_control_plane::offline;
    match cmd {
        UserCommand::Create(a) => {
            let (user, generated) = offline::create_user(
                &a.dir.data_dir,
                &a.email,
                &a.name,
                a.role,
                a.tenant.as_deref(),
                a.legacy,
                password_from_env(),
            )?;
            println!(
                "created {} ({}) id {}",
                user.email,
                user.role.as_str(),
                user.id
            );
            if let Some(p) = generated {
                println!("password: {p}   (shown once)");
            }
        }
        UserCommand::List(a) => {
            for u in offline::list_users(&a.data_dir)? {
                let state = if u.disabled { "disabled" } else { "enabled" };
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    u.id,
                    u.email,
                    u.role.as_str(),
                    u.tenant_id.unwrap_or_default(),
                    state
                );
            }
        }
        UserCommand::Disable(a) => {
            let user = offline::disable_user(&a.dir.data_dir, &a.email)?;
            println!("disabled {}", user.email);
        }
        UserCommand::ResetPassword(a) => {
            match offline::reset_password(&a.dir.data_dir, &a.email, password_from_env())? {
                Some(p) => println!("password: {p}   (shown once)"),
                None => println!("password set from AXON_USER_PASSWORD"),
            }
        }
    }
    Ok(())
}

/// Says, once serving, how many agent links the open-file limit leaves room for.
fn report_open_files(open_files: u64) {
    // About 150 descriptors go to the store, the listeners and API clients.
    tracing::info!(
        open_files,
        agents = open_files.saturating_sub(150),
        "open-file limit (one descriptor per agent link)"
    );
    if open_files < 4096 {
        tracing::warn!(
            open_files,
            "the open-file limit caps the fleet near this many agents; raise LimitNOFILE"
        );
    }
}

/// Writes the backup beside `out` and renames it into place once whole and checked, so a
/// failed run never leaves a truncated file under the name of a good one.
fn backup(data_dir: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    use axon_control_plane::backup;
    use std::os::unix::fs::OpenOptionsExt;
    let partial = out.with_extension("partial");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| anyhow::anyhow!("{}: {e}", partial.display()))?;
    // A socket left by a server that was killed answers nothing: the dir is then read directly.
    let taken = match backup::backup_from_server(data_dir, &file) {
        Err(backup::BackupError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            backup::backup_offline(data_dir, &file).map(|_| ())
        }
        other => other.map(|_| ()),
    };
    let checked = taken
        .and_then(|()| {
            file.sync_all().map_err(|e| backup::BackupError::Io {
                path: partial.clone(),
                source: e,
            })
        })
        .and_then(|()| backup::check(&partial));
    let summary = match checked {
        Ok(summary) => summary,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    eprintln!(
        "axon-cp: warning: {} holds the CA key, the token signing keys and every secret of the control plane; keep it as you keep them (it is written 0600)",
        out.display()
    );
    println!(
        "backup written to {}: {} store entries in {} trees, {} files",
        out.display(),
        summary.entries,
        summary.trees,
        summary.files
    );
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let open_files = axon_control_plane::raise_open_files();
    let mut config = ServeConfig::new(args.data_dir);
    config.insecure_http = args.insecure_http;
    config.agent_url = args.agent_url;
    config.ping_interval = args.ping_interval;
    config.max_frame_bytes = args.max_frame_bytes;
    config.metrics_retention = args.metrics_retention;
    config.min_free_bytes = args.min_free_mb.saturating_mul(1 << 20);
    config.cert_lifetime = args.cert_lifetime;
    config.access_ttl = args.access_ttl;
    config.llm = axon_control_plane::llm::LlmConfig::load(args.llm_config.as_deref(), &|name| {
        std::env::var(name).ok()
    })?;
    config.agency =
        axon_control_plane::agency::AgencyConfig::from_env(&|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)?;
    config.console =
        axon_control_plane::console::ConsoleConfig::from_env(&|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let api = tokio::net::TcpListener::bind(args.api_listen)
            .await
            .with_context(|| format!("binding the API listener on {}", args.api_listen))?;
        let agent = tokio::net::TcpListener::bind(args.agent_listen)
            .await
            .with_context(|| format!("binding the agent listener on {}", args.agent_listen))?;
        run(config, Listeners { api, agent }, shutdown_signal(), || {
            report_open_files(open_files);
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        })
        .await?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
