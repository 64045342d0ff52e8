//! Agents as witnesses of their tenant's audit log (docs/audit.md): what the
//! gateway sends and answers. Kept apart from the session loop, which only
//! calls these functions.
//!
//! - After `Welcome`, and whenever the checkpointer announces a new
//!   checkpoint of the agent's tenant, the agent gets
//!   `ServerMsg::AuditCheckpoint` with the signed note.
//! - `AgentMsg::AuditConsistencyRequest { from, to }` is answered with
//!   `ServerMsg::AuditConsistency`; sizes the server cannot prove get an
//!   empty proof, which the agent refuses (and alarms on) by itself.
//!   Proofs are cached per `(log, from, to)`: every agent of a tenant asks
//!   for the same one after each checkpoint.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use picket_proto::{AuditAlarm, AuditCheckpoint, AuditConsistency, B64, ServerMsg};
use picket_shared::merkle::Hash;
use uuid::Uuid;

use crate::AppState;
use crate::audit::{self, Event, Outcome, checkpoint, proof};
use crate::db::entity::{agent, audit_checkpoint};

/// Most cached consistency proofs (the cache is cleared when full).
const MAX_CACHED: usize = 1024;

/// `(log, from, to)` → the consistency proof served.
type Proofs = HashMap<(String, u64, u64), Arc<Vec<Hash>>>;

/// Consistency proofs recently served, and agents whose alarm was recorded.
#[derive(Default)]
pub struct ProofCache(Mutex<Proofs>, Mutex<HashSet<Uuid>>);

/// An agent reports that it refused a checkpoint of its tenant's log: logged
/// and recorded in the audit log once per agent and server process (its
/// health reports repeat it until the agent's operator resets the witness).
pub async fn alarm(state: &AppState, a: &agent::Model, alarm: AuditAlarm) {
    let first = state
        .witness_proofs
        .1
        .lock()
        .map(|mut s| s.insert(a.id))
        .unwrap_or(true);
    if !first {
        return;
    }
    tracing::error!(agent_id = %a.id, tenant_id = %a.tenant_id, ?alarm, "an agent refused an audit checkpoint: the audit log may have been rewritten");
    let ev = Event::agent(
        a.tenant_id,
        a.id,
        "audit.witness_alarm",
        "audit_log",
        a.tenant_id,
    )
    .outcome(Outcome::Failure)
    .details(serde_json::json!({ "alarm": alarm }));
    if let Err(e) = audit::record(&state.db, ev).await {
        tracing::error!(error = %e, "cannot record the witness alarm");
    }
}

/// The checkpoint message for `c`, if it is the log of `tenant`.
pub fn checkpoint_msg(c: &audit_checkpoint::Model, tenant: Uuid) -> Option<ServerMsg> {
    (c.log_id == tenant.to_string()).then(|| {
        ServerMsg::AuditCheckpoint(AuditCheckpoint {
            note: c.note.clone(),
        })
    })
}

/// The latest checkpoint of the tenant's log, to send after `Welcome`.
pub async fn initial(state: &AppState, tenant: Uuid) -> Option<ServerMsg> {
    match checkpoint::latest(&state.db, &tenant.to_string()).await {
        Ok(Some(c)) => checkpoint_msg(&c, tenant),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the latest audit checkpoint");
            None
        }
    }
}

/// The answer to a consistency request from an agent of `tenant`.
pub async fn answer(state: &AppState, tenant: Uuid, from: u64, to: u64) -> ServerMsg {
    let log = tenant.to_string();
    let empty = ServerMsg::AuditConsistency(AuditConsistency {
        from,
        to,
        proof: Vec::new(),
    });
    // Only sizes covered by a signed checkpoint are provable.
    let latest = match checkpoint::latest(&state.db, &log).await {
        Ok(Some(c)) => u64::try_from(c.size).unwrap_or(0),
        _ => return empty,
    };
    if from == 0 || from > to || to > latest {
        return empty;
    }
    let key = (log.clone(), from, to);
    let cached = state
        .witness_proofs
        .0
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned());
    let hashes = match cached {
        Some(h) => h,
        None => match proof::consistency(&state.db, &log, from, to).await {
            Ok(p) => {
                let p = Arc::new(p);
                if let Ok(mut m) = state.witness_proofs.0.lock() {
                    if m.len() >= MAX_CACHED {
                        m.clear();
                    }
                    m.insert(key, Arc::clone(&p));
                }
                p
            }
            Err(e) => {
                tracing::warn!(error = %e, from, to, "cannot build an audit consistency proof");
                return empty;
            }
        },
    };
    ServerMsg::AuditConsistency(AuditConsistency {
        from,
        to,
        proof: hashes.iter().map(|h| B64(*h)).collect(),
    })
}
