//! The tamper-evident audit trail (docs/audit.md). Every state change and
//! security event is recorded by [`record`] inside the same transaction as
//! the change, so if the event cannot be written the change does not happen
//! (fail closed).
//!
//! Each event is a leaf of its log's RFC 6962 Merkle tree: one log per
//! tenant, plus the `system` log for events that belong to no tenant
//! (start-up, failed logins to unknown accounts, refused anonymous
//! connections). The leaf data is the event's canonical JSON.
//!
//! # Layout
//! - [`admin`]: the `picket-server admin audit` commands.
//! - [`canonical`]: the stable JSON encoding of an event (the leaf bytes).
//! - [`tree`]: the compact range (frontier) that makes roots incremental.
//! - [`checkpoint`]: the checkpointer: copies leaf hashes, signs tree heads.
//! - [`proof`]: inclusion and consistency proofs from the stored leaves.
//! - [`query`]: listing and filtering events.
//! - [`stream`]: streaming events to a syslog receiver (TCP/TLS) as they are committed.
//! - [`verify`]: `admin audit verify`, recomputing every tree from the database.
//! - [`export`]: JSON Lines (with proofs), CEF and syslog exports, and the
//!   offline verification of a JSON Lines export.

pub mod admin;
pub mod canonical;
pub mod checkpoint;
pub mod export;
pub mod proof;
pub mod query;
pub mod stream;
pub mod tree;
pub mod verify;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use uuid::Uuid;

use crate::time::{rfc3339, unix_now};

/// Id of the log of events that belong to no tenant.
pub const SYSTEM_LOG: &str = "system";

/// Longest `resource_id`, client IP and user agent kept (longer ones are cut).
const MAX_FIELD_CHARS: usize = 512;

/// Largest `details` kept verbatim (canonical JSON bytes); larger details are
/// replaced by their size and SHA-256 so a hostile input cannot bloat the log.
pub const MAX_DETAILS_BYTES: usize = 8 * 1024;

tokio::task_local! {
    /// The HTTP request being served, set by the API's `audit_context` layer.
    static REQUEST: RequestContext;
}

/// What the API knows about the client of the request being served: filled
/// into every event recorded while serving it (unless the event sets them).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The peer's IP address.
    pub client_ip: Option<String>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// Authenticated by the session cookie (a browser: the console) rather than a bearer token.
    pub console: bool,
}

/// Runs `f` (a request handler) with `ctx` as its request context.
pub async fn with_request<F: std::future::Future>(ctx: RequestContext, f: F) -> F::Output {
    REQUEST.scope(ctx, f).await
}

/// The log an event of `tenant` belongs to.
pub fn log_id(tenant: Option<Uuid>) -> String {
    tenant.map_or_else(|| SYSTEM_LOG.to_owned(), |t| t.to_string())
}

/// Who did it.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    /// A signed-in user.
    User(Uuid),
    /// An API key (scoped, expiring credentials of automation).
    ApiKey(Uuid),
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
    /// The web console.
    Console,
    /// The HTTP API.
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
    /// Client user agent, when known.
    pub user_agent: Option<String>,
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
            user_agent: None,
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
            user_agent: None,
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
    /// Adds a secret-bearing detail as `hmac-sha256:<hex>` of its value under
    /// the audit key (from the master secret), like Vault's audit devices:
    /// equal secrets can be correlated, the secret itself is never stored.
    pub fn secret_detail(mut self, key: &str, value: &[u8], audit_key: &[u8; 32]) -> Self {
        let mac = picket_shared::vault::hmac_sha256(audit_key, value);
        let tagged = serde_json::Value::String(format!("hmac-sha256:{}", hex::encode(mac)));
        match &mut self.details {
            serde_json::Value::Object(map) => {
                map.insert(key.to_owned(), tagged);
            }
            other => {
                let mut map = serde_json::Map::new();
                if !other.is_null() {
                    map.insert("value".to_owned(), other.take());
                }
                map.insert(key.to_owned(), tagged);
                *other = serde_json::Value::Object(map);
            }
        }
        self
    }

    /// Sets the client IP and user agent (cut to a bounded length).
    pub fn client(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.client_ip = ip;
        self.user_agent = user_agent;
        self
    }

    /// Sets the channel.
    pub fn source(mut self, source: Source) -> Self {
        self.source = source;
        self
    }
}

impl Actor {
    /// `(type, id)` as stored.
    pub fn parts(&self) -> (&'static str, Option<String>) {
        match self {
            Actor::User(id) => ("user", Some(id.to_string())),
            Actor::ApiKey(id) => ("api_key", Some(id.to_string())),
            Actor::Agent(id) => ("agent", Some(id.to_string())),
            Actor::System => ("system", None),
            Actor::Anonymous => ("anonymous", None),
        }
    }
}

impl Source {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Console => "console",
            Source::Api => "api",
            Source::Agent => "agent",
            Source::Cli => "cli",
            Source::System => "system",
        }
    }
}

impl Outcome {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

fn bounded(s: Option<String>) -> Option<String> {
    s.map(|v| {
        if v.chars().count() > MAX_FIELD_CHARS {
            v.chars().take(MAX_FIELD_CHARS).collect()
        } else {
            v
        }
    })
}

/// An event ready to append: its log, the canonical leaf bytes and the
/// columns copied from them for filtering.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Log id.
    pub log_id: String,
    /// Event id (UUIDv7).
    pub event_id: String,
    /// Tenant.
    pub tenant_id: Option<String>,
    /// Unix seconds.
    pub at: i64,
    /// Actor type.
    pub actor_type: &'static str,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Action.
    pub action: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: Option<String>,
    /// Source.
    pub source: &'static str,
    /// Client IP.
    pub client_ip: Option<String>,
    /// Outcome.
    pub outcome: &'static str,
    /// Canonical JSON (the leaf data).
    pub canonical: String,
    /// Its leaf hash.
    pub leaf_hash: [u8; 32],
}

/// Builds the canonical form of `event` at time `at`.
pub fn prepare(mut event: Event, at: i64) -> Prepared {
    let _ = REQUEST.try_with(|ctx| {
        if event.client_ip.is_none() {
            event.client_ip.clone_from(&ctx.client_ip);
        }
        if event.user_agent.is_none() {
            event.user_agent.clone_from(&ctx.user_agent);
        }
        if ctx.console && matches!(event.source, Source::Api) {
            event.source = Source::Console;
        }
    });
    let (actor_type, actor_id) = event.actor.parts();
    let log = log_id(event.tenant_id);
    let event_id = Uuid::now_v7().to_string();
    let resource_id = bounded(event.resource_id);
    let client_ip = bounded(event.client_ip);
    let user_agent = bounded(event.user_agent);
    let mut details = event.details;
    let details_text = canonical::to_canonical(&details);
    if details_text.len() > MAX_DETAILS_BYTES {
        details = serde_json::json!({
            "truncated": true,
            "bytes": details_text.len(),
            "sha256": hex::encode(picket_shared::vault::sha256(details_text.as_bytes())),
        });
    }
    let tenant = event.tenant_id.map(|t| t.to_string());
    let body = serde_json::json!({
        "v": canonical::VERSION,
        "id": event_id,
        "log": log,
        "time": rfc3339(at),
        "at": at,
        "tenant": tenant,
        "actor": { "type": actor_type, "id": actor_id },
        "action": event.action,
        "resource": { "type": event.resource_type, "id": resource_id },
        "source": event.source.as_str(),
        "client_ip": client_ip,
        "user_agent": user_agent,
        "outcome": event.outcome.as_str(),
        "details": details,
    });
    let canonical = canonical::to_canonical(&body);
    let leaf_hash = picket_shared::merkle::leaf_hash(canonical.as_bytes());
    Prepared {
        log_id: log,
        event_id,
        tenant_id: tenant,
        at,
        actor_type,
        actor_id,
        action: event.action.to_owned(),
        resource_type: event.resource_type.to_owned(),
        resource_id,
        source: event.source.as_str(),
        client_ip,
        outcome: event.outcome.as_str(),
        canonical,
        leaf_hash,
    }
}

/// Columns written by [`record`], in bind order after `log_id`.
const COLUMNS: &str = "log_id, idx, event_id, tenant_id, at, actor_type, actor_id, action, \
     resource_type, resource_id, source, client_ip, outcome, canonical, leaf_hash";

/// SQLite: one statement allocates the next index (writers are serialised by
/// the database lock, so `MAX + 1` is race-free) and appends the row. After
/// a full prune the watermark is the next index.
fn sqlite_insert() -> String {
    format!(
        "INSERT INTO audit_events ({COLUMNS}) SELECT ?1, \
         COALESCE(MAX(idx) + 1, (SELECT below_idx FROM audit_prune WHERE log_id = ?1), 0), \
         ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 \
         FROM audit_events WHERE log_id = ?1"
    )
}

/// PostgreSQL: the per-log head row is upserted (`ON CONFLICT DO UPDATE`
/// locks it until the transaction ends), so concurrent writers of one log
/// queue on that row and get consecutive indexes; one statement, so it is
/// atomic even outside a transaction.
fn pg_insert() -> String {
    format!(
        "WITH head AS (INSERT INTO audit_heads (log_id, size) VALUES ($1, 1) \
         ON CONFLICT (log_id) DO UPDATE SET size = audit_heads.size + 1 RETURNING size) \
         INSERT INTO audit_events ({COLUMNS}) SELECT $1, head.size - 1, \
         $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM head"
    )
}

/// Appends `event` using `conn` (pass the transaction of the change it records).
///
/// # Errors
/// If the row cannot be written; the caller's transaction must then roll back.
pub async fn record(conn: &impl ConnectionTrait, event: Event) -> Result<(), sea_orm::DbErr> {
    record_at(conn, event, unix_now()).await
}

/// [`record`] with an explicit time (imports of past events, tests of retention).
///
/// # Errors
/// As [`record`].
pub async fn record_at(
    conn: &impl ConnectionTrait,
    event: Event,
    at: i64,
) -> Result<(), sea_orm::DbErr> {
    let p = prepare(event, at);
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => pg_insert(),
        _ => sqlite_insert(),
    };
    let values: Vec<Value> = vec![
        p.log_id.into(),
        p.event_id.into(),
        p.tenant_id.into(),
        p.at.into(),
        p.actor_type.to_owned().into(),
        p.actor_id.into(),
        p.action.into(),
        p.resource_type.into(),
        p.resource_id.into(),
        p.source.to_owned().into(),
        p.client_ip.into(),
        p.outcome.to_owned().into(),
        p.canonical.into(),
        p.leaf_hash.to_vec().into(),
    ];
    let res = conn
        .execute(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    if res.rows_affected() != 1 {
        return Err(sea_orm::DbErr::Custom(format!(
            "audit event not appended ({} rows)",
            res.rows_affected()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_details_are_hmacd_never_stored() {
        let key = [7u8; 32];
        let ev = Event::user(Uuid::nil(), Uuid::nil(), "x.y", "x", 1)
            .details(serde_json::json!({ "name": "n" }))
            .secret_detail("token", b"s3cret-value", &key);
        let p = prepare(ev, 0);
        assert!(!p.canonical.contains("s3cret-value"), "{}", p.canonical);
        let mac = hex::encode(picket_shared::vault::hmac_sha256(&key, b"s3cret-value"));
        assert!(
            p.canonical
                .contains(&format!("\"token\":\"hmac-sha256:{mac}\"")),
            "{}",
            p.canonical
        );
        assert!(p.canonical.contains("\"name\":\"n\""));
    }

    #[tokio::test]
    async fn request_context_fills_client_fields_and_console_source() {
        let ctx = RequestContext {
            client_ip: Some("192.0.2.7".into()),
            user_agent: Some("Mozilla/5.0".into()),
            console: true,
        };
        let p = with_request(ctx, async {
            prepare(Event::user(Uuid::nil(), Uuid::nil(), "x.y", "x", 1), 0)
        })
        .await;
        assert_eq!(p.client_ip.as_deref(), Some("192.0.2.7"));
        assert_eq!(p.source, "console");
        assert!(p.canonical.contains("\"user_agent\":\"Mozilla/5.0\""));
        // Outside a request nothing is invented.
        let p = prepare(Event::user(Uuid::nil(), Uuid::nil(), "x.y", "x", 1), 0);
        assert_eq!((p.client_ip, p.source), (None, "api"));
    }

    #[test]
    fn oversized_details_are_replaced_by_their_digest() {
        let big = "x".repeat(MAX_DETAILS_BYTES + 1);
        let p = prepare(
            Event::user(Uuid::nil(), Uuid::nil(), "x.y", "x", 1)
                .details(serde_json::json!({ "v": big })),
            0,
        );
        assert!(p.canonical.len() < 2048, "{}", p.canonical.len());
        assert!(p.canonical.contains("\"truncated\":true"));
    }
}
