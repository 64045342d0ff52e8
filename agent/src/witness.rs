//! The agent as a witness of its tenant's audit log (docs/audit.md).
//!
//! The server pushes signed checkpoints (`ServerMsg::AuditCheckpoint`). The
//! witness accepts one only if it is signed by the pinned server key under
//! the key name `picket-audit`, names this agent's tenant log, and extends
//! the checkpoint accepted before: same size needs the same root, a larger
//! size needs a consistency proof, which the witness asks for
//! (`AgentMsg::AuditConsistencyRequest`) and checks. The first checkpoint
//! is accepted on its signature alone (trust on first use, like the key pin).
//!
//! Anything else is refused: the refusal is written to the local journal,
//! logged, and set as the health report's `audit_alarm` (sticky for the
//! life of the process; the accepted checkpoint stays the old one, so the
//! alarm is raised again for every later checkpoint of the forked history).
//!
//! State file: `audit-witness.json` in the state directory (size, root,
//! note of the last accepted checkpoint), written atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use picket_proto::audit::{AUDIT_KEY_NAME, audit_origin};
use picket_proto::{AgentMsg, AuditAlarm, AuditConsistency, Outcome};
use picket_shared::checkpoint::{Checkpoint, verify_checkpoint};
use picket_shared::merkle::{Hash, verify_consistency};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::health::Counters;
use crate::journal::{Journal, JournalEntry};

/// File name of the witness state inside the state directory.
pub const WITNESS_FILE: &str = "audit-witness.json";

/// The last accepted checkpoint, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Accepted {
    size: u64,
    root: String,
    note: String,
}

/// The server keys a checkpoint may be signed with, asked at each checkpoint:
/// after a signing-key rotation the agent's keyring holds old and new keys.
pub type TrustedKeys = Box<dyn Fn() -> Vec<VerifyingKey> + Send>;

/// The witness of one agent.
pub struct Witness {
    path: PathBuf,
    keys: TrustedKeys,
    origin: String,
    accepted: Option<(u64, Hash)>,
    /// A larger checkpoint waiting for its consistency proof.
    pending: Option<(Checkpoint, String)>,
    counters: Arc<Counters>,
    journal: Option<Journal>,
}

impl Witness {
    /// Opens the witness state in `dir` (a missing file means nothing accepted yet).
    ///
    /// # Errors
    /// If the state file exists but cannot be read or parsed.
    pub fn open(
        dir: &Path,
        keys: TrustedKeys,
        tenant_id: Uuid,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let path = dir.join(WITNESS_FILE);
        let accepted = match std::fs::read(&path) {
            Ok(bytes) => {
                let a: Accepted = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!(
                        "{} is damaged ({e}); remove it to reset the witness",
                        path.display()
                    )
                })?;
                let root = hex::decode(&a.root)
                    .ok()
                    .and_then(|r| Hash::try_from(r.as_slice()).ok())
                    .ok_or_else(|| anyhow::anyhow!("{} holds a malformed root", path.display()))?;
                Some((a.size, root))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        // A second handle on the journal: lines are appended whole (O_APPEND).
        let journal = match Journal::open(dir) {
            Ok(j) => Some(j),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the journal for audit witness alarms");
                None
            }
        };
        Ok(Witness {
            path,
            keys,
            origin: audit_origin(&tenant_id),
            accepted,
            pending: None,
            counters,
            journal,
        })
    }

    /// Size of the accepted checkpoint, if any.
    pub fn accepted_size(&self) -> Option<u64> {
        self.accepted.map(|(s, _)| s)
    }

    /// A checkpoint pushed by the server. Returns the consistency request to
    /// send, when one is needed.
    pub fn on_checkpoint(&mut self, note: &str) -> Option<AgentMsg> {
        let verified = (self.keys)()
            .iter()
            .find_map(|k| verify_checkpoint(note, AUDIT_KEY_NAME, k).ok());
        let cp = match verified {
            Some(c) => c,
            None => {
                self.alarm(AuditAlarm::BadSignature);
                return None;
            }
        };
        if cp.origin != self.origin {
            self.alarm(AuditAlarm::WrongOrigin);
            return None;
        }
        match self.accepted {
            None => {
                self.accept(&cp, note);
                None
            }
            Some((size, _)) if cp.size < size => {
                self.alarm(AuditAlarm::Rollback);
                None
            }
            Some((size, root)) if cp.size == size => {
                if cp.root != root {
                    self.alarm(AuditAlarm::Inconsistent);
                }
                None
            }
            Some((size, _)) => {
                let to = cp.size;
                self.pending = Some((cp, note.to_owned()));
                Some(AgentMsg::AuditConsistencyRequest { from: size, to })
            }
        }
    }

    /// The server's consistency proof for the pending checkpoint.
    pub fn on_consistency(&mut self, c: &AuditConsistency) {
        let Some((old_size, old_root)) = self.accepted else {
            return;
        };
        let Some((cp, note)) = self.pending.take() else {
            tracing::debug!("ignoring an unrequested audit consistency proof");
            return;
        };
        if c.from != old_size || c.to != cp.size {
            // Not the proof asked for: keep waiting for the right one.
            self.pending = Some((cp, note));
            return;
        }
        let proof: Vec<Hash> = c.proof.iter().map(|h| h.0).collect();
        match verify_consistency(old_size, cp.size, &proof, &old_root, &cp.root) {
            Ok(()) => self.accept(&cp, &note),
            Err(_) => self.alarm(AuditAlarm::Inconsistent),
        }
    }

    fn accept(&mut self, cp: &Checkpoint, note: &str) {
        let stored = Accepted {
            size: cp.size,
            root: hex::encode(cp.root),
            note: note.to_owned(),
        };
        match serde_json::to_vec_pretty(&stored)
            .map_err(anyhow::Error::new)
            .and_then(|b| crate::state::write_atomic(&self.path, &b))
        {
            Ok(()) => {
                self.accepted = Some((cp.size, cp.root));
                tracing::debug!(size = cp.size, "accepted an audit checkpoint");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot store the accepted audit checkpoint")
            }
        }
    }

    fn alarm(&mut self, alarm: AuditAlarm) {
        tracing::error!(
            ?alarm,
            accepted_size = self.accepted_size(),
            "refused an audit checkpoint from the server: its audit log history may have been rewritten"
        );
        if let Ok(mut a) = self.counters.audit_alarm.lock()
            && a.is_none()
        {
            *a = Some(alarm);
        }
        if let Some(j) = &mut self.journal {
            let entry = JournalEntry {
                audit_alarm: Some(alarm),
                ..JournalEntry::now(None, Outcome::Refused, None)
            };
            if let Err(e) = j.append(&entry) {
                tracing::error!(error = %e, "cannot journal the audit witness alarm");
            }
        }
    }
}
