//! The agent's own key pairs and their rotation, crash-safe.
//!
//! ```text
//! <state_dir>/
//!   x25519.key, ed25519.key   the current keys (32 bytes each, 0600)
//!   rotation.pending          new keys not yet confirmed: X25519 secret ‖ Ed25519 seed (64 bytes, 0600)
//!   x25519.prev.key           the X25519 secret replaced by the last rotation (jobs sealed before it)
//! ```
//!
//! Rotation, step by step (every write is atomic and fsynced before the next
//! step; the server's side is one transaction):
//!
//! 1. New keys are generated and written to `rotation.pending`, **before**
//!    anything is sent. `picket-agent rotate-keys` does only this; the
//!    running agent notices the file (it re-reads its keys at every connect
//!    and checks for the file every few seconds while connected), so the CLI
//!    and the service never both talk to the server. An admin request from
//!    the server makes the running agent do the same.
//! 2. On a session, the agent sends `RotateKeys`: the new public keys signed
//!    by the current identity and by the new one, bound to the challenge nonce.
//! 3. The server stores them and answers `KeysRotated`, signed by its
//!    job-signing key; the agent checks it.
//! 4. Promotion: the old X25519 secret is saved as `x25519.prev.key`, the
//!    new keys overwrite `x25519.key` and `ed25519.key`, `rotation.pending`
//!    is removed.
//!
//! A crash at any point leaves an agent that connects with one of the two
//! identities: with `rotation.pending` present it first says `Hello` with the
//! current key; if the server refuses that key as superseded (it stored the
//! new one but the confirmation was lost) it tries the pending key, then
//! repeats `RotateKeys`, which the server confirms again, and promotion
//! completes. Jobs are opened with every X25519 secret on hand (current,
//! pending, previous), so none sealed around the rotation is lost.

use std::path::Path;

use anyhow::Context as _;
use picket_shared::keys::AgentKeys;
use zeroize::Zeroizing;

use crate::state::{
    ED25519_KEY_FILE, StateDir, X25519_KEY_FILE, read_secret, sync_dir, write_atomic,
};

/// New keys waiting for the server's confirmation.
pub const PENDING_FILE: &str = "rotation.pending";
/// The X25519 secret replaced by the last rotation.
pub const PREVIOUS_X25519_FILE: &str = "x25519.prev.key";

/// The agent's keys as on disk.
pub struct Identity {
    /// The keys the server knows (unless a rotation is half done, see the module doc).
    pub current: AgentKeys,
    /// New keys written but not yet confirmed by the server.
    pub pending: Option<AgentKeys>,
    /// The X25519 secret before the last rotation.
    pub previous_x25519: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("current", &self.current)
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the current keys, a pending rotation and the previous X25519 secret.
    ///
    /// # Errors
    /// If a key file is missing (current keys only), malformed or too open.
    pub fn load(state: &StateDir) -> anyhow::Result<Self> {
        let current = state.load_keys()?;
        let dir = state.path();
        let pending = if dir.join(PENDING_FILE).exists() {
            let both = read_secret::<64>(&dir.join(PENDING_FILE))?;
            let mut x = Zeroizing::new([0u8; 32]);
            let mut e = Zeroizing::new([0u8; 32]);
            x.copy_from_slice(&both[..32]);
            e.copy_from_slice(&both[32..]);
            Some(AgentKeys::from_bytes(&x, &e))
        } else {
            None
        };
        let previous_x25519 = if dir.join(PREVIOUS_X25519_FILE).exists() {
            Some(read_secret::<32>(&dir.join(PREVIOUS_X25519_FILE))?)
        } else {
            None
        };
        Ok(Identity {
            current,
            pending,
            previous_x25519,
        })
    }

    /// Every key pair whose X25519 secret may open a job: current, pending, previous.
    pub fn decryption_keys(&self) -> Vec<AgentKeys> {
        let mut out = vec![clone(&self.current)];
        if let Some(p) = &self.pending {
            out.push(clone(p));
        }
        if let Some(x) = &self.previous_x25519 {
            // Only the X25519 half is used to open jobs.
            out.push(AgentKeys::from_bytes(x, &self.current.ed25519_seed()));
        }
        out
    }
}

fn clone(k: &AgentKeys) -> AgentKeys {
    AgentKeys::from_bytes(&k.x25519_secret_bytes(), &k.ed25519_seed())
}

/// Whether a rotation is pending in `dir`.
pub fn is_pending(dir: &Path) -> bool {
    dir.join(PENDING_FILE).exists()
}

/// Step 1: generates new keys and writes them to `rotation.pending` (0600,
/// fsynced) before anything is sent.
///
/// # Errors
/// If a rotation is already pending (its keys may already be on their way
/// to the server), or the file cannot be written.
pub fn begin(dir: &Path) -> anyhow::Result<AgentKeys> {
    anyhow::ensure!(
        !is_pending(dir),
        "a key rotation is already pending ({}); the running agent completes it on its next connection",
        dir.join(PENDING_FILE).display()
    );
    let keys = AgentKeys::generate().context("cannot generate new keys")?;
    let mut both = Zeroizing::new([0u8; 64]);
    both[..32].copy_from_slice(keys.x25519_secret_bytes().as_slice());
    both[32..].copy_from_slice(keys.ed25519_seed().as_slice());
    write_atomic(&dir.join(PENDING_FILE), both.as_slice())?;
    Ok(keys)
}

/// Step 4, after the server confirmed `new`: keeps the old X25519 secret,
/// makes `new` the current keys, removes `rotation.pending`. Safe to repeat
/// after a crash part-way (see the module doc).
///
/// # Errors
/// If a file cannot be written or removed.
pub fn promote(dir: &Path, old: &AgentKeys, new: &AgentKeys) -> anyhow::Result<()> {
    if old.x25519_public() != new.x25519_public() {
        write_atomic(
            &dir.join(PREVIOUS_X25519_FILE),
            old.x25519_secret_bytes().as_slice(),
        )?;
    }
    write_atomic(
        &dir.join(X25519_KEY_FILE),
        new.x25519_secret_bytes().as_slice(),
    )?;
    write_atomic(&dir.join(ED25519_KEY_FILE), new.ed25519_seed().as_slice())?;
    let p = dir.join(PENDING_FILE);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
    sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;

    #[test]
    fn begin_refuses_a_second_rotation_and_promote_is_repeatable() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path());
        let old = AgentKeys::generate().unwrap();
        sd.write_keys(&old).unwrap();
        let new = begin(sd.path()).unwrap();
        let e = format!("{:#}", begin(sd.path()).unwrap_err());
        assert!(e.contains("already pending"), "{e}");
        let id = Identity::load(&sd).unwrap();
        assert_eq!(
            id.pending.as_ref().unwrap().ed25519_public(),
            new.ed25519_public()
        );
        assert_eq!(id.decryption_keys().len(), 2);

        // A crash after the X25519 file was replaced: still one consistent outcome.
        write_atomic(
            &sd.path().join(X25519_KEY_FILE),
            new.x25519_secret_bytes().as_slice(),
        )
        .unwrap();
        let half = Identity::load(&sd).unwrap();
        assert_eq!(half.current.ed25519_public(), old.ed25519_public());
        assert!(half.pending.is_some());

        promote(sd.path(), &old, &new).unwrap();
        promote(sd.path(), &old, &new).unwrap();
        let id = Identity::load(&sd).unwrap();
        assert!(id.pending.is_none());
        assert_eq!(id.current.ed25519_public(), new.ed25519_public());
        assert_eq!(id.current.x25519_public(), new.x25519_public());
        let keys = id.decryption_keys();
        assert_eq!(keys.len(), 2, "current and previous X25519");
        assert_eq!(keys[1].x25519_public(), old.x25519_public());
    }
}
