//! Domain operations. Every function that reads or writes tenant data takes
//! the tenant id and filters by it, so a handler cannot forget isolation; each
//! change and its audit event commit in one transaction.
//!
//! # Layout
//! - [`accounts`]: instance claiming, users, login and logout.
//! - [`enrollment`]: enrollment tokens and agent enrollment.
//! - [`agents`]: the fleet view.
//! - [`connections`]: SIEM connections and the credential vault.
//! - [`rules`]: rules and their immutable versions.
//! - [`deployments`]: requests, approvals (separation of duties) and dispatch.
//! - [`jobs`]: the durable job outbox.
//! - [`health`]: the batched health writer.
//! - [`validate`]: input bounds shared by the services.

pub mod accounts;
pub mod agents;
pub mod connections;
pub mod deployments;
pub mod enrollment;
pub mod health;
pub mod jobs;
pub mod rules;
pub mod validate;
