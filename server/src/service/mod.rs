//! Domain operations. Every function that reads or writes tenant data takes
//! the caller's tenant (a [`scope::TenantScope`], or the `CurrentUser` that
//! yields one) and reads tenant rows through it, so the tenant filter is part
//! of the query builder rather than something each query must remember; each
//! change and its audit event commit in one transaction.
//!
//! # Layout
//! - [`accounts`]: instance claiming, users, login and logout.
//! - [`enrollment`]: enrollment tokens and agent enrollment.
//! - [`agents`]: the fleet view.
//! - [`key_rotation`]: agents replacing their key pairs (proof, storage, admin request).
//! - [`connections`]: SIEM connections and the credential vault.
//! - [`rules`]: rules and their immutable versions.
//! - [`deployments`]: requests, approvals (separation of duties) and dispatch.
//! - [`drift`]: scheduled drift checks, their results and resolutions.
//! - [`rule_health`]: scheduled per-rule health checks and their bounded history.
//! - [`jobs`]: the durable job outbox.
//! - [`health`]: the batched health writer.
//! - [`scope`]: [`scope::TenantScope`], the tenant-bound query handle.
//! - [`api_keys`]: API keys (created by an Admin, shown once, stored hashed).
//! - [`invitations`]: single-use, expiring invitations.
//! - [`sessions`]: listing and ending sessions.
//! - [`rotation`]: master-secret rotation (re-wrapping every key in one transaction).
//! - [`validate`]: input bounds shared by the services.
//! - [`console`]: read queries only the web console needs (paged fleet, history).

pub mod accounts;
pub mod agents;
pub mod api_keys;
pub mod connections;
pub mod console;
pub mod deployments;
pub mod drift;
pub mod enrollment;
pub mod health;
pub mod invitations;
pub mod jobs;
pub mod key_rotation;
pub mod rotation;
pub mod rule_health;
pub mod rules;
pub mod scope;
pub mod sessions;
pub mod validate;
