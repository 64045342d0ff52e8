//! The audit trail. Every state change and security event is recorded by
//! [`record`] inside the same transaction as the change, so if the event cannot
//! be written the change does not happen (fail closed).

use sea_orm::{ActiveModelTrait as _, ConnectionTrait, NotSet, Set};
use uuid::Uuid;

use crate::db::entity::audit_event;
use crate::time::unix_now;

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    /// A signed-in user.
    User(Uuid),
    /// An enrolled agent.
    Agent(Uuid),
    /// The server itself (schedulers, start-up).
    System,
    /// Someone not (yet) authenticated, e.g. a failed login.
    Anonymous,
}

/// How it reached us.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The HTTP API (or console).
    Api,
    /// The agent gateway.
    Agent,
    /// An admin command on the server host.
    Cli,
    /// Internal.
    System,
}

/// How it ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed.
    Failure,
    /// Refused by authorization or policy.
    Denied,
}

/// One audit event. `details` must never hold a secret.
#[derive(Debug, Clone)]
pub struct Event {
    /// Tenant, when the event belongs to one.
    pub tenant_id: Option<Uuid>,
    /// Who.
    pub actor: Actor,
    /// What, as `resource.verb` (e.g. `deployment.approve`).
    pub action: &'static str,
    /// Kind of object acted on.
    pub resource_type: &'static str,
    /// Its id.
    pub resource_id: Option<String>,
    /// Channel.
    pub source: Source,
    /// Client IP, when known.
    pub client_ip: Option<String>,
    /// Result.
    pub outcome: Outcome,
    /// Structured, secret-free details.
    pub details: serde_json::Value,
}

impl Event {
    /// A successful API action by a user on a resource.
    pub fn user(
        tenant_id: Uuid,
        user_id: Uuid,
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl ToString,
    ) -> Self {
        Event {
            tenant_id: Some(tenant_id),
            actor: Actor::User(user_id),
            action,
            resource_type,
            resource_id: Some(resource_id.to_string()),
            source: Source::Api,
            client_ip: None,
            outcome: Outcome::Success,
            details: serde_json::Value::Null,
        }
    }

    /// An event from an agent over the gateway.
    pub fn agent(
        tenant_id: Uuid,
        agent_id: Uuid,
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl ToString,
    ) -> Self {
        Event {
            tenant_id: Some(tenant_id),
            actor: Actor::Agent(agent_id),
            action,
            resource_type,
            resource_id: Some(resource_id.to_string()),
            source: Source::Agent,
            client_ip: None,
            outcome: Outcome::Success,
            details: serde_json::Value::Null,
        }
    }

    /// Attaches details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// Appends `event` using `conn` (pass the transaction of the change it records).
///
/// # Errors
/// If the row cannot be written; the caller's transaction must then roll back.
pub async fn record(conn: &impl ConnectionTrait, event: Event) -> Result<(), sea_orm::DbErr> {
    let (actor_type, actor_id) = match event.actor {
        Actor::User(id) => ("user", Some(id)),
        Actor::Agent(id) => ("agent", Some(id)),
        Actor::System => ("system", None),
        Actor::Anonymous => ("anonymous", None),
    };
    let source = match event.source {
        Source::Api => "api",
        Source::Agent => "agent",
        Source::Cli => "cli",
        Source::System => "system",
    };
    let outcome = match event.outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Denied => "denied",
    };
    audit_event::ActiveModel {
        id: NotSet,
        tenant_id: Set(event.tenant_id),
        at: Set(unix_now()),
        actor_type: Set(actor_type.to_owned()),
        actor_id: Set(actor_id),
        action: Set(event.action.to_owned()),
        resource_type: Set(event.resource_type.to_owned()),
        resource_id: Set(event.resource_id),
        source: Set(source.to_owned()),
        client_ip: Set(event.client_ip),
        outcome: Set(outcome.to_owned()),
        details: Set(event.details.to_string()),
    }
    .insert(conn)
    .await?;
    Ok(())
}
