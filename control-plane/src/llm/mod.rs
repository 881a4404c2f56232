//! The LLM gateway: one OpenAI-compatible endpoint for the agency, routing each call to a
//! cloud provider (OpenAI and compatible servers, Gemini, DeepSeek) or to a fleet host's
//! Ollama / SD WebUI through its agent link; with fail-over, circuit breakers, budgets and
//! per-tenant usage. See docs/llm-gateway.md.

pub mod config;
pub mod deepseek;
pub mod fleet;
pub mod framing;
pub mod gateway;
pub mod gemini;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod ollama;
pub mod openai;
pub mod provider;
pub mod routes;
pub mod sdwebui;
pub mod transport;
pub mod usage;
pub mod wire;

pub use config::LlmConfig;
pub use gateway::Gateway;
