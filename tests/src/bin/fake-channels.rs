//! `fake-channels`: local fakes of n8n, Ayrshare and the Telegram Bot API as a process, to try
//! deploys by hand. Prints the `export` lines that point axon-cp at them, then serves (and
//! prints each call it gets) until killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use axon_e2e::fake_channels::{FakeChannels, FakeSetup};
use clap::Parser;

/// Fakes of the deploy services, speaking their documented formats.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8099")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let fakes = FakeChannels::bind(
        args.listen,
        FakeSetup {
            ayrshare_key: "local-ayrshare-key".into(),
            telegram_token: "1000:local-telegram-token".into(),
            n8n_paths: vec!["whatsapp-deploy".into()],
            n8n_header: Some(("X-N8N-Key".into(), "local-n8n-key".into())),
        },
    )
    .await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "# fake n8n, Ayrshare and Telegram on {}",
        fakes.addr
    )?;
    for (k, v) in fakes.env() {
        writeln!(stdout, "export {k}='{v}'")?;
    }
    stdout.flush()?;
    drop(stdout);
    let mut shown = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = fakes.seen();
        for s in &seen[shown..] {
            // The bot token is part of Telegram paths: show the method only.
            let path = match s.path.strip_prefix("/bot") {
                Some(rest) => format!("/bot<token>/{}", rest.split('/').nth(1).unwrap_or("")),
                None => s.path.clone(),
            };
            eprintln!(
                "{:?} {} {path} ({} bytes)",
                s.service,
                s.method,
                s.body.len()
            );
        }
        shown = seen.len();
    }
}
