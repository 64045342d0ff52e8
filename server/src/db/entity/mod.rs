//! sea-orm entities, one module per table. Queries live in `crate::service`.

pub mod agent;
pub mod agent_health;
pub mod api_key;
pub mod approval;
pub mod audit_checkpoint;
pub mod audit_event;
pub mod audit_leaf;
pub mod deployment;
pub mod enrollment_token;
pub mod health_sample;
pub mod instance_claim;
pub mod invitation;
pub mod job;
pub mod rule;
pub mod rule_test_run;
pub mod rule_version;
pub mod server_key;
pub mod session;
pub mod siem_connection;
pub mod tenant;
pub mod user;
