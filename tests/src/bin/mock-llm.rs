//! `mock-llm`: the mock LLM upstream as a process, for benchmarks and for running LiteLLM in
//! front of it. Prints `listening on ADDR` on stdout, then serves until killed. It records no
//! requests, so its memory stays flat under load.

use std::io::Write as _;
use std::net::SocketAddr;

use axon_e2e::mock_llm::{Behaviour, MockLlm};
use clap::Parser;

/// A mock LLM upstream speaking OpenAI, DeepSeek, Gemini, Ollama and SD WebUI.
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Wait before each non-streamed answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Content deltas per stream; 0: one per word of the answer.
    #[arg(long, default_value_t = 0)]
    deltas: usize,
    /// Gap between stream events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pace_ms: u64,
    /// Answer 401 unless requests carry this key.
    #[arg(long)]
    require_key: Option<String>,
    /// First part of every answer, to tell mocks apart.
    #[arg(long, default_value = "mock")]
    label: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let behaviour = Behaviour {
        delay_ms: args.delay_ms,
        deltas: args.deltas,
        pace_ms: args.pace_ms,
        require_key: args.require_key,
        label: args.label,
        record: false,
        ..Behaviour::default()
    };
    let mock = MockLlm::bind(args.listen, behaviour).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {}", mock.addr())?;
    stdout.flush()?;
    drop(stdout);
    std::future::pending::<()>().await;
    Ok(())
}
