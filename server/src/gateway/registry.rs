//! Live agent connections. One entry per connected agent; a newer connection
//! for the same agent replaces the older one, which is told to close, so there
//! are never two live sessions for one agent.
//!
//! With several replicas (PostgreSQL), the registry also tells the others
//! ([`super::cluster`]): a new session announces itself so a stale one on
//! another replica closes, and a wake-up, revocation or key-rotation request
//! for an agent not connected here is passed on. The `*_local` methods are
//! what a notification from another replica does here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::cluster::Signal;

/// What the rest of the server can ask of a connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// New jobs are in the outbox: deliver them.
    Wake,
    /// Another connection of the same agent took over: close.
    Replaced,
    /// An admin revoked the agent: send `Revoked`, then close.
    Revoke,
    /// An admin asked the agent to rotate its keys: send `RequestKeyRotation`.
    RequestKeyRotation,
}

struct Entry {
    conn_id: u64,
    tx: mpsc::Sender<Command>,
}

/// Maps agent ids to their live connection.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<Uuid, Entry>>,
    next_id: AtomicU64,
    /// The queue to the other replicas; set once at start-up on PostgreSQL.
    peers: OnceLock<mpsc::Sender<Signal>>,
    /// This process among the replicas (random per start), so a replica
    /// ignores its own announcements.
    instance: OnceLock<Uuid>,
}

/// A registered connection; unregisters itself on drop (only if still current).
pub struct Registration<'a> {
    registry: &'a Registry,
    agent_id: Uuid,
    conn_id: u64,
}

impl Registry {
    /// Registers a connection for `agent_id`, replacing (and closing) any previous one.
    pub fn register(&self, agent_id: Uuid, tx: mpsc::Sender<Command>) -> Registration<'_> {
        let conn_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = match self.inner.lock() {
            Ok(mut m) => m.insert(agent_id, Entry { conn_id, tx }),
            Err(poisoned) => poisoned
                .into_inner()
                .insert(agent_id, Entry { conn_id, tx }),
        };
        if let Some(old) = old {
            send_reliably(old.tx, Command::Replaced);
        }
        self.publish(Signal::Connected(agent_id));
        Registration {
            registry: self,
            agent_id,
            conn_id,
        }
    }

    /// Connects the registry to the other replicas (see [`super::cluster`]).
    pub fn set_peers(&self, tx: mpsc::Sender<Signal>) {
        let _ = self.peers.set(tx);
    }

    /// Whether other replicas share the database (PostgreSQL).
    pub fn has_peers(&self) -> bool {
        self.peers.get().is_some()
    }

    /// This process's id among the replicas.
    pub fn instance(&self) -> Uuid {
        *self.instance.get_or_init(Uuid::new_v4)
    }

    /// Queues a signal for the other replicas, if there are any. Never
    /// blocks: when the queue is full the signal is dropped (logged), and the
    /// periodic sweep delivers its effect.
    fn publish(&self, s: Signal) {
        if let Some(tx) = self.peers.get()
            && tx.try_send(s).is_err()
        {
            tracing::warn!(
                signal = ?s,
                "replica notification queue full; the sweep will catch up"
            );
        }
    }

    /// Wakes the agent's connection; if it is not connected here, the other
    /// replicas are told. Never blocks: a full queue already holds a wake-up.
    pub fn wake(&self, agent_id: Uuid) {
        if !self.wake_local(agent_id) {
            self.publish(Signal::Wake(agent_id));
        }
    }

    /// Wakes the agent's connection if it has one here; returns whether it had.
    pub fn wake_local(&self, agent_id: Uuid) -> bool {
        let tx = self.with(|m| m.get(&agent_id).map(|e| e.tx.clone()));
        match tx {
            Some(tx) => {
                let _ = tx.try_send(Command::Wake);
                true
            }
            None => false,
        }
    }

    /// Tells the agent's connection that the agent is revoked, here and on
    /// the other replicas. Returns whether it had a connection here. Never
    /// blocks; the command is not lost when the queue is full (see
    /// [`send_reliably`]).
    pub fn revoke(&self, agent_id: Uuid) -> bool {
        self.publish(Signal::Revoke(agent_id));
        self.revoke_local(agent_id)
    }

    /// [`Registry::revoke`], for a connection here only.
    pub fn revoke_local(&self, agent_id: Uuid) -> bool {
        self.command_local(agent_id, Command::Revoke)
    }

    /// Tells the agent's connection to ask the agent for a key rotation; if
    /// it is not connected here, the other replicas are told. Returns whether
    /// it had a connection here.
    pub fn request_key_rotation(&self, agent_id: Uuid) -> bool {
        let here = self.request_key_rotation_local(agent_id);
        if !here {
            self.publish(Signal::RotateKeys(agent_id));
        }
        here
    }

    /// [`Registry::request_key_rotation`], for a connection here only.
    pub fn request_key_rotation_local(&self, agent_id: Uuid) -> bool {
        self.command_local(agent_id, Command::RequestKeyRotation)
    }

    /// The agent connected to another replica: its session here, if any, is
    /// stale and closes.
    pub fn replaced_elsewhere(&self, agent_id: Uuid) {
        if let Some(old) = self.with(|m| m.remove(&agent_id)) {
            send_reliably(old.tx, Command::Replaced);
        }
    }

    fn command_local(&self, agent_id: Uuid, cmd: Command) -> bool {
        let tx = self.with(|m| m.get(&agent_id).map(|e| e.tx.clone()));
        match tx {
            Some(tx) => {
                send_reliably(tx, cmd);
                true
            }
            None => false,
        }
    }

    /// Whether the agent is connected to this server.
    pub fn is_connected(&self, agent_id: Uuid) -> bool {
        self.with(|m| m.contains_key(&agent_id))
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<Uuid, Entry>) -> R) -> R {
        match self.inner.lock() {
            Ok(mut m) => f(&mut m),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// Queues a command that must arrive (unlike a wake-up, which a full queue
/// already holds): tried at once, and if the queue is full, sent from a
/// short-lived task that waits for room, so the caller never blocks. A closed
/// queue means the connection is already gone, which is what was wanted.
fn send_reliably(tx: mpsc::Sender<Command>, cmd: Command) {
    match tx.try_send(cmd) {
        Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.registry.with(|m| {
            if m.get(&self.agent_id)
                .is_some_and(|e| e.conn_id == self.conn_id)
            {
                m.remove(&self.agent_id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn newer_connection_replaces_older() {
        let r = Registry::default();
        let id = Uuid::now_v7();
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let g1 = r.register(id, tx1);
        let g2 = r.register(id, tx2);
        assert_eq!(rx1.recv().await, Some(Command::Replaced));
        drop(g1); // the stale registration must not remove the new one
        assert!(r.is_connected(id));
        r.wake(id);
        assert_eq!(rx2.recv().await, Some(Command::Wake));
        drop(g2);
        assert!(!r.is_connected(id));
    }

    #[tokio::test]
    async fn revoke_reaches_a_connection_with_a_full_queue() {
        let r = Registry::default();
        let id = Uuid::now_v7();
        let (tx, mut rx) = mpsc::channel(1);
        let _g = r.register(id, tx);
        r.wake(id); // fills the queue
        assert!(r.revoke(id));
        assert_eq!(rx.recv().await, Some(Command::Wake));
        assert_eq!(rx.recv().await, Some(Command::Revoke));
        assert!(!r.revoke(Uuid::now_v7()), "no connection, nothing told");
    }
}
