//! Who may do what: authentication (passwords, tokens, API keys, sessions), the policy that
//! maps roles and scopes to routes, and the audit trail of every decision and change.

pub mod audit;
pub mod auth;
pub mod policy;
