//! The server signing keys this agent trusts, and how the set changes when
//! the server rotates its key.
//!
//! Enrollment pins one key (the token's fingerprint). After a server-side
//! rotation, every `Welcome` carries the key chain: each new key endorsed by
//! its predecessor ([`KeyLink`]). The agent walks it from a key it already
//! pins, so an agent that was offline during the rotation catches up, and
//! records until when the predecessor's jobs stay acceptable (the overlap
//! window); after it, a job signed by the old key is refused as signed by an
//! unknown key.
//!
//! The set is persisted in `server_keys.json` (mode 0600, written atomically
//! with fsync) whenever it changes; without that file the enrollment record's
//! key is the only one.
//!
//! A link is accepted when its signature verifies under a key the agent
//! pins, even one whose window has closed: an agent offline for longer than
//! the window must still be able to catch up. The price is documented in
//! `docs/security.md`: a stolen retired key can endorse a key of the thief's
//! for agents that never saw the rotation.

use std::path::Path;

use anyhow::Context as _;
use ed25519_dalek::VerifyingKey;
use picket_proto::{B64, KeyFingerprint, KeyLink};
use picket_shared::keys::{fingerprint, verify_signature};
use serde::{Deserialize, Serialize};

use crate::state::{Enrollment, write_atomic};

/// File name of the trusted server keys.
pub const SERVER_KEYS_FILE: &str = "server_keys.json";

/// One trusted server signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedKey {
    /// SHA-256 fingerprint of `public` (the `key_id` of the jobs it signs).
    pub key_id: KeyFingerprint,
    /// The Ed25519 public key.
    pub public: B64<32>,
    /// Unix seconds after which jobs signed by this key are refused (set when
    /// a successor is accepted); `None` while it is the newest key.
    pub valid_until: Option<i64>,
}

/// The trusted server keys, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    /// Every key accepted so far.
    pub keys: Vec<PinnedKey>,
}

impl Keyring {
    /// The keyring in `dir`, or the enrollment's single key if none was saved.
    ///
    /// # Errors
    /// If the file exists but cannot be read or parsed, or a key is invalid.
    pub fn load(dir: &Path, enrollment: &Enrollment) -> anyhow::Result<Self> {
        let p = dir.join(SERVER_KEYS_FILE);
        let ring = match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice::<Keyring>(&bytes)
                .with_context(|| format!("{} is corrupt", p.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Keyring {
                keys: vec![PinnedKey {
                    key_id: enrollment.key_id,
                    public: enrollment.server_signing_key,
                    valid_until: None,
                }],
            },
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        for k in &ring.keys {
            let vk = VerifyingKey::from_bytes(&k.public.0)
                .with_context(|| format!("{} holds an invalid key", p.display()))?;
            anyhow::ensure!(
                fingerprint(&vk) == k.key_id,
                "{} is inconsistent: a key_id is not its key's fingerprint",
                p.display()
            );
        }
        Ok(ring)
    }

    /// Writes the keyring (mode 0600, atomically, fsynced).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("cannot encode the keyring")?;
        json.push(b'\n');
        write_atomic(&dir.join(SERVER_KEYS_FILE), &json)
    }

    fn find(&self, id: &KeyFingerprint) -> Option<&PinnedKey> {
        self.keys.iter().find(|k| k.key_id == *id)
    }

    /// Whether `id` is pinned and its window is open at `now`.
    pub fn is_valid(&self, id: &KeyFingerprint, now: i64) -> bool {
        self.find(id)
            .is_some_and(|k| k.valid_until.is_none_or(|until| now <= until))
    }

    /// Whether `id` is pinned at all (valid or retired).
    pub fn knows(&self, id: &KeyFingerprint) -> bool {
        self.find(id).is_some()
    }

    /// The key `id` if it is valid at `now`.
    pub fn valid_key(&self, id: &KeyFingerprint, now: i64) -> Option<VerifyingKey> {
        if !self.is_valid(id, now) {
            return None;
        }
        self.find(id)
            .and_then(|k| VerifyingKey::from_bytes(&k.public.0).ok())
    }

    /// Every key whose window is open at `now`: jobs must verify under one of them.
    pub fn valid_keys(&self, now: i64) -> Vec<VerifyingKey> {
        self.keys
            .iter()
            .filter(|k| k.valid_until.is_none_or(|until| now <= until))
            .filter_map(|k| VerifyingKey::from_bytes(&k.public.0).ok())
            .collect()
    }

    /// Walks a key chain: every link signed by a pinned key adds its key
    /// (and closes the predecessor's window at the link's `prev_valid_until`),
    /// repeated until nothing changes, so links may come in any order.
    /// Links that do not verify are ignored. Returns whether the set changed.
    pub fn walk(&mut self, chain: &[KeyLink]) -> bool {
        let mut changed = false;
        loop {
            let mut progress = false;
            for link in chain {
                let Some(prev) = self.find(&link.prev_key_id).cloned() else {
                    continue;
                };
                let bytes = KeyLink::signing_bytes(
                    &link.prev_key_id,
                    &link.public.0,
                    link.prev_valid_until,
                );
                if verify_signature(&prev.public.0, &bytes, &link.sig.0).is_err() {
                    tracing::warn!(endorser = %link.prev_key_id, "ignoring a key-chain link that does not verify");
                    continue;
                }
                let Ok(vk) = VerifyingKey::from_bytes(&link.public.0) else {
                    continue;
                };
                let id = fingerprint(&vk);
                if !self.knows(&id) {
                    tracing::info!(key_id = %id, endorsed_by = %link.prev_key_id, "accepted a new server signing key");
                    self.keys.push(PinnedKey {
                        key_id: id,
                        public: link.public,
                        valid_until: None,
                    });
                    progress = true;
                }
                if let Some(p) = self.keys.iter_mut().find(|k| k.key_id == link.prev_key_id) {
                    let until = p
                        .valid_until
                        .map_or(link.prev_valid_until, |u| u.min(link.prev_valid_until));
                    if p.valid_until != Some(until) {
                        p.valid_until = Some(until);
                        progress = true;
                    }
                }
            }
            if !progress {
                return changed;
            }
            changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use picket_shared::keys::ServerSigningKey;
    use uuid::Uuid;

    use super::*;

    fn link(from: &ServerSigningKey, to: &ServerSigningKey, until: i64) -> KeyLink {
        let public = to.verifying_key().to_bytes();
        KeyLink {
            public: B64(public),
            prev_key_id: from.fingerprint(),
            prev_valid_until: until,
            sig: B64(from.sign(&KeyLink::signing_bytes(&from.fingerprint(), &public, until))),
        }
    }

    fn ring_of(k: &ServerSigningKey) -> Keyring {
        let en = Enrollment {
            agent_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            server_url: "https://p".into(),
            server_signing_key: B64(k.verifying_key().to_bytes()),
            key_id: k.fingerprint(),
        };
        let dir = tempfile::tempdir().unwrap();
        Keyring::load(dir.path(), &en).unwrap()
    }

    #[test]
    fn walks_a_chain_in_any_order_and_closes_windows() {
        let (k0, k1, k2) = (
            ServerSigningKey::generate().unwrap(),
            ServerSigningKey::generate().unwrap(),
            ServerSigningKey::generate().unwrap(),
        );
        let mut ring = ring_of(&k0);
        let chain = [link(&k1, &k2, 2_000), link(&k0, &k1, 1_000)];
        assert!(ring.walk(&chain));
        assert!(!ring.walk(&chain), "walking again changes nothing");
        assert!(ring.is_valid(&k0.fingerprint(), 1_000));
        assert!(!ring.is_valid(&k0.fingerprint(), 1_001), "window closed");
        assert!(ring.knows(&k0.fingerprint()));
        assert!(ring.is_valid(&k1.fingerprint(), 2_000));
        assert!(ring.is_valid(&k2.fingerprint(), i64::MAX));
        assert_eq!(ring.valid_keys(1_500).len(), 2);
    }

    #[test]
    fn forged_or_unanchored_links_are_ignored() {
        let (k0, k1, evil) = (
            ServerSigningKey::generate().unwrap(),
            ServerSigningKey::generate().unwrap(),
            ServerSigningKey::generate().unwrap(),
        );
        let mut ring = ring_of(&k0);
        // Signed by a key the agent does not pin.
        assert!(!ring.walk(&[link(&evil, &k1, 10)]));
        // Claims k0 as endorser but is signed by another key.
        let mut forged = link(&evil, &k1, 10);
        forged.prev_key_id = k0.fingerprint();
        assert!(!ring.walk(&[forged]));
        assert!(!ring.knows(&k1.fingerprint()));
        assert!(ring.is_valid(&k0.fingerprint(), i64::MAX));
    }

    #[test]
    #[cfg(unix)]
    fn saves_0600_and_loads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let (k0, k1) = (
            ServerSigningKey::generate().unwrap(),
            ServerSigningKey::generate().unwrap(),
        );
        let mut ring = ring_of(&k0);
        ring.walk(&[link(&k0, &k1, 5)]);
        let dir = tempfile::tempdir().unwrap();
        ring.save(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SERVER_KEYS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let en = Enrollment {
            agent_id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            server_url: "https://p".into(),
            server_signing_key: B64(k0.verifying_key().to_bytes()),
            key_id: k0.fingerprint(),
        };
        assert_eq!(Keyring::load(dir.path(), &en).unwrap(), ring);
    }
}
