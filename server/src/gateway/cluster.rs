//! Several replicas on one PostgreSQL: each holds its own agent connections,
//! and what one replica decides reaches an agent connected to another through
//! PostgreSQL `LISTEN/NOTIFY` on the channel [`CHANNEL`].
//!
//! Notifications carry only ids (`w <agent>...`: jobs are waiting; `r
//! <agent>`: revoked; `k <agent>`: key rotation requested; `c <instance>
//! <agent>`: the agent just connected to replica `<instance>`, so any other
//! session of it elsewhere is stale and closes). The outbox stays the source of
//! truth: a woken connection reads its jobs from the database, and a lost
//! notification costs only latency, because a periodic sweep (every
//! `replica_sweep_secs`, and at once after the listener reconnects) wakes every
//! local connection whose agent has a job never sent, and revokes local
//! sessions of agents revoked since. A lost key-rotation request is not swept:
//! the flag stays on the agent row and the next session start asks for it.
//!
//! The listener reconnects with exponential backoff (`backon`: 100 ms doubling
//! to 10 s, with jitter, for ever). On SQLite nothing here runs: one process
//! owns the database.

use std::collections::HashSet;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use sea_orm::sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, DatabaseConnection, DbBackend, EntityTrait as _,
    QueryFilter as _, QuerySelect as _, Set, Statement,
};
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::AppState;
use crate::db::entity::{agent, agent_session, job};
use crate::time::unix_now;

/// The PostgreSQL notification channel shared by the replicas.
pub const CHANNEL: &str = "picket_agents";
/// How often a replica refreshes `seen_at` of the sessions it holds.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(5);
/// A session row not refreshed for this long belongs to a dead replica.
pub const PRESENCE_STALE_SECS: i64 = 20;
/// Signals queued for the publisher before new ones are dropped (the sweep
/// then covers them).
const QUEUE: usize = 65_536;
/// Agent ids per notification: PostgreSQL caps a payload at 8000 bytes and
/// each id takes 37.
const IDS_PER_PAYLOAD: usize = 180;

/// Something other replicas must hear about one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Jobs were put in the agent's outbox.
    Wake(Uuid),
    /// The agent was revoked.
    Revoke(Uuid),
    /// An admin asked the agent to rotate its keys.
    RotateKeys(Uuid),
    /// The agent connected here: older sessions elsewhere must close.
    Connected(Uuid),
}

/// Starts the publisher, the listener and the sweep when the database is
/// PostgreSQL; does nothing on SQLite. Returns the tasks to await at shutdown.
pub fn spawn(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let url = &state.config.database_url;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Vec::new();
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    state.registry.set_peers(tx);
    let resweep = Arc::new(Notify::new());
    vec![
        tokio::spawn(publish(state.clone(), rx)),
        tokio::spawn(listen(state.clone(), resweep.clone())),
        tokio::spawn(sweep_loop(state.clone(), resweep)),
    ]
}

/// Sends queued signals as notifications, batching wake-ups.
async fn publish(state: AppState, mut rx: mpsc::Receiver<Signal>) {
    let instance = state.registry.instance();
    let mut buf = Vec::with_capacity(1024);
    loop {
        let n = tokio::select! {
            () = state.shutdown.cancelled() => return,
            n = rx.recv_many(&mut buf, 1024) => n,
        };
        if n == 0 {
            return;
        }
        let mut payloads = Vec::new();
        let wakes: Vec<Uuid> = buf
            .iter()
            .filter_map(|s| match s {
                Signal::Wake(a) => Some(*a),
                _ => None,
            })
            .collect();
        for chunk in wakes.chunks(IDS_PER_PAYLOAD) {
            let mut p = String::from("w");
            for a in chunk {
                p.push(' ');
                p.push_str(&a.to_string());
            }
            payloads.push(p);
        }
        for s in buf.drain(..) {
            match s {
                Signal::Wake(_) => {}
                Signal::Revoke(a) => payloads.push(format!("r {a}")),
                Signal::RotateKeys(a) => payloads.push(format!("k {a}")),
                Signal::Connected(a) => payloads.push(format!("c {instance} {a}")),
            }
        }
        for p in payloads {
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANNEL.into(), p.into()],
            );
            if let Err(e) = state.db.execute(stmt).await {
                tracing::warn!(error = %e, "publishing to the other replicas failed; the sweep will catch up");
            }
        }
    }
}

fn new_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The `application_name` of the listener's connection, so an operator can
/// tell it apart in `pg_stat_activity` (one per replica).
pub fn listener_application_name(replica_id: &str) -> String {
    format!("picket-listener-{replica_id}")
}

/// Opens the listener's own connection (a pool of one, without lifetime or
/// idle limits, as `PgListener::connect` does) and subscribes to [`CHANNEL`].
async fn connect_listener(state: &AppState) -> Result<PgListener, sea_orm::sqlx::Error> {
    let options = PgConnectOptions::from_str(&state.config.database_url)?
        .application_name(&listener_application_name(&state.config.replica_id));
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Listens for the other replicas' notifications, reconnecting with backoff.
///
/// Two ways back after the connection drops (PostgreSQL restarted, the
/// backend terminated, the network cut): `PgListener` reconnects and
/// re-subscribes by itself and says so with `Ok(None)`; if that reconnect
/// fails, the error ends this listener and a new one is opened on the backoff
/// schedule. Either way every (re)connect is logged, counted in
/// `picket_replica_listener_connects_total`, and followed by a sweep, because
/// notifications sent meanwhile are lost (the outbox still has the jobs).
async fn listen(state: AppState, resweep: Arc<Notify>) {
    let mut backoff = new_backoff();
    loop {
        let mut listener = tokio::select! {
            () = state.shutdown.cancelled() => return,
            r = connect_listener(&state) => match r {
                Ok(l) => l,
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "cannot listen for the other replicas");
                    tokio::select! {
                        () = state.shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => continue,
                    }
                }
            },
        };
        backoff = new_backoff();
        state.metrics.listener_connected();
        tracing::info!(
            channel = CHANNEL,
            "listening for the other replicas' notifications"
        );
        // Whatever was notified while we were not listening is in the outbox.
        resweep.notify_one();
        loop {
            let next = tokio::select! {
                () = state.shutdown.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => handle(&state, n.payload()),
                Ok(None) => {
                    // PgListener has already reconnected and re-subscribed.
                    state.metrics.listener_connected();
                    tracing::warn!(
                        channel = CHANNEL,
                        "lost the notification connection; reconnected and listening again, sweeping"
                    );
                    resweep.notify_one();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "notification listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Applies one notification to the local connections. Unknown or malformed
/// payloads are ignored: only replicas can NOTIFY on the channel, but a
/// newer replica may speak a kind this one does not know.
fn handle(state: &AppState, payload: &str) {
    let mut words = payload.split(' ');
    let kind = words.next();
    let me = state.registry.instance().to_string();
    match kind {
        Some("w") => {
            for id in words.filter_map(|w| w.parse::<Uuid>().ok()) {
                state.registry.wake_local(id);
            }
        }
        Some("r") => {
            if let Some(id) = words.next().and_then(|w| w.parse().ok()) {
                state.registry.revoke_local(id);
            }
        }
        Some("k") => {
            if let Some(id) = words.next().and_then(|w| w.parse().ok()) {
                state.registry.request_key_rotation_local(id);
            }
        }
        Some("c") => {
            let from = words.next();
            if let (Some(from), Some(id)) = (from, words.next().and_then(|w| w.parse().ok()))
                && from != me
            {
                state.registry.replaced_elsewhere(id);
            }
        }
        _ => tracing::debug!(payload, "ignoring an unknown replica notification"),
    }
}

async fn sweep_loop(state: AppState, resweep: Arc<Notify>) {
    let mut tick = tokio::time::interval(Duration::from_secs(state.config.replica_sweep_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut presence = tokio::time::interval(PRESENCE_EVERY);
    presence.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                // A clean stop hands the sessions back at once instead of
                // letting them go stale.
                let _ = agent_session::Entity::delete_many()
                    .filter(agent_session::Column::Instance.eq(state.registry.instance()))
                    .exec(&state.db)
                    .await;
                return;
            }
            _ = presence.tick() => {
                let refreshed = agent_session::Entity::update_many()
                    .col_expr(agent_session::Column::SeenAt, sea_orm::sea_query::Expr::value(unix_now()))
                    .filter(agent_session::Column::Instance.eq(state.registry.instance()))
                    .exec(&state.db)
                    .await;
                if let Err(e) = refreshed {
                    tracing::warn!(error = %e, "refreshing this replica's sessions failed");
                }
                continue;
            }
            _ = tick.tick() => {}
            () = resweep.notified() => {}
        }
        if let Err(e) = sweep(&state).await {
            tracing::warn!(error = %e, "replica sweep failed; retrying next period");
        }
    }
}

/// Whether sessions are shared between replicas (PostgreSQL).
pub fn enabled(state: &AppState) -> bool {
    state.registry.has_peers()
}

/// Records that this replica holds the agent's session (replacing whatever
/// another replica recorded). No-op on SQLite.
///
/// # Errors
/// On storage failure.
pub async fn session_started(state: &AppState, agent_id: Uuid) -> Result<(), sea_orm::DbErr> {
    if !enabled(state) {
        return Ok(());
    }
    let now = unix_now();
    agent_session::Entity::insert(agent_session::ActiveModel {
        agent_id: Set(agent_id),
        instance: Set(state.registry.instance()),
        replica: Set(state.config.replica_id.clone()),
        connected_at: Set(now),
        seen_at: Set(now),
    })
    .on_conflict(
        sea_orm::sea_query::OnConflict::column(agent_session::Column::AgentId)
            .update_columns([
                agent_session::Column::Instance,
                agent_session::Column::Replica,
                agent_session::Column::ConnectedAt,
                agent_session::Column::SeenAt,
            ])
            .to_owned(),
    )
    .exec(&state.db)
    .await
    .map(|_| ())
}

/// Forgets the agent's session if this replica still holds it. No-op on SQLite.
///
/// # Errors
/// On storage failure.
pub async fn session_ended(state: &AppState, agent_id: Uuid) -> Result<(), sea_orm::DbErr> {
    if !enabled(state) {
        return Ok(());
    }
    agent_session::Entity::delete_many()
        .filter(agent_session::Column::AgentId.eq(agent_id))
        .filter(agent_session::Column::Instance.eq(state.registry.instance()))
        .exec(&state.db)
        .await
        .map(|_| ())
}

/// Which of `ids` have a live session on another replica (on SQLite: none).
///
/// # Errors
/// On storage failure.
pub async fn connected_elsewhere(
    state: &AppState,
    db: &DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, sea_orm::DbErr> {
    if !enabled(state) || ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut out = HashSet::new();
    // Bounded statements: a large fleet is looked up in chunks.
    for chunk in ids.chunks(1000) {
        let rows: Vec<Uuid> = agent_session::Entity::find()
            .select_only()
            .column(agent_session::Column::AgentId)
            .filter(agent_session::Column::AgentId.is_in(chunk.iter().copied()))
            .filter(agent_session::Column::SeenAt.gte(unix_now() - PRESENCE_STALE_SECS))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// The safety net: wakes local connections of agents with a job never sent,
/// and ends local sessions of agents revoked in the last few periods.
async fn sweep(state: &AppState) -> Result<(), sea_orm::DbErr> {
    if state.registry.is_empty() {
        return Ok(());
    }
    let now = unix_now();
    let waiting: Vec<Uuid> = job::Entity::find()
        .select_only()
        .column(job::Column::AgentId)
        .distinct()
        .filter(job::Column::State.eq("pending"))
        .filter(job::Column::LastSentAt.is_null())
        .filter(job::Column::ExpiresAt.gt(now))
        .into_tuple()
        .all(&state.db)
        .await?;
    for id in waiting {
        state.registry.wake_local(id);
    }
    let window = i64::try_from(state.config.replica_sweep_secs * 3).unwrap_or(30);
    let revoked: Vec<Uuid> = agent::Entity::find()
        .select_only()
        .column(agent::Column::Id)
        .filter(agent::Column::RevokedAt.gte(now - window))
        .into_tuple()
        .all(&state.db)
        .await?;
    for id in revoked {
        state.registry.revoke_local(id);
    }
    Ok(())
}
