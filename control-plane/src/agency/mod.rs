//! The agency's business: orders and their state machine, production plans made through the
//! LLM gateway, agent blueprints and the builder's artifacts, the catalog, factory stats, demo
//! data, and the durable outbox that carries signed webhooks to n8n and other receivers.

pub mod blueprint;
pub mod builder;
pub mod outbox;
pub mod webhooks;
