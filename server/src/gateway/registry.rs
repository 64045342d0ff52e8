//! Live agent connections. One entry per connected agent; a newer connection
//! for the same agent replaces the older one, which is told to close, so there
//! are never two live sessions for one agent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use uuid::Uuid;

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
        Registration {
            registry: self,
            agent_id,
            conn_id,
        }
    }

    /// Wakes the agent's connection, if it has one here. Never blocks: a full
    /// queue already holds a wake-up.
    pub fn wake(&self, agent_id: Uuid) {
        let tx = self.with(|m| m.get(&agent_id).map(|e| e.tx.clone()));
        if let Some(tx) = tx {
            let _ = tx.try_send(Command::Wake);
        }
    }

    /// Tells the agent's connection, if it has one here, that the agent is
    /// revoked. Returns whether there was one. Never blocks; the command is
    /// not lost when the queue is full (see [`send_reliably`]).
    pub fn revoke(&self, agent_id: Uuid) -> bool {
        let tx = self.with(|m| m.get(&agent_id).map(|e| e.tx.clone()));
        match tx {
            Some(tx) => {
                send_reliably(tx, Command::Revoke);
                true
            }
            None => false,
        }
    }

    /// Tells the agent's connection, if it has one here, to ask the agent
    /// for a key rotation. Returns whether there was one.
    pub fn request_key_rotation(&self, agent_id: Uuid) -> bool {
        let tx = self.with(|m| m.get(&agent_id).map(|e| e.tx.clone()));
        match tx {
            Some(tx) => {
                send_reliably(tx, Command::RequestKeyRotation);
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
