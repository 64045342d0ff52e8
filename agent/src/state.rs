//! The agent's state directory: its two private keys, the enrollment record
//! and (see [`crate::ledger`]) the job ledger.
//!
//! ```text
//! <state_dir>/            mode 0700
//!   x25519.key            32 raw bytes, mode 0600: job decryption key
//!   ed25519.key           32 raw bytes, mode 0600: identity key seed
//!   enrollment.json       who we are and which server key we pinned (written last)
//!   ledger.jsonl          job ledger (see ledger.rs)
//! ```
//!
//! Every file is written atomically (temporary file created with its final
//! mode, fsync, rename, fsync of the directory), so a crash never leaves a
//! half-written key. `enrollment.json` is written after the keys: its
//! presence means the enrollment completed. Keys with group or other
//! permission bits are refused at load time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use picket_proto::{B64, KeyFingerprint};
use picket_shared::keys::AgentKeys;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

/// File name of the X25519 job-decryption key.
pub const X25519_KEY_FILE: &str = "x25519.key";
/// File name of the Ed25519 identity key seed.
pub const ED25519_KEY_FILE: &str = "ed25519.key";
/// File name of the enrollment record.
pub const ENROLLMENT_FILE: &str = "enrollment.json";
/// Marker written when the server revokes this agent: `run` refuses to start
/// while it exists (`enroll --force` removes it).
pub const REVOKED_FILE: &str = "revoked";

/// What enrollment established: the agent's identity and the server key it pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The agent id issued by the server.
    pub agent_id: Uuid,
    /// The tenant the agent belongs to.
    pub tenant_id: Uuid,
    /// The server URL used to enroll; `run` connects there unless configured otherwise.
    pub server_url: String,
    /// The server's Ed25519 job-signing public key (base64): jobs must verify under it.
    pub server_signing_key: B64<32>,
    /// SHA-256 fingerprint of `server_signing_key` (the value the token pinned).
    pub key_id: KeyFingerprint,
}

/// Handle on the state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// A handle on `path`, without touching the file system.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (and parents) with mode 0700 if it does not
    /// exist, and tightens an existing one to 0700.
    ///
    /// # Errors
    /// If the directory cannot be created or its mode set.
    pub fn create(&self) -> anyhow::Result<()> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&self.path)
            .with_context(|| format!("cannot create state directory {}", self.path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set mode 0700 on {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Whether an enrollment record exists.
    pub fn is_enrolled(&self) -> bool {
        self.path.join(ENROLLMENT_FILE).exists()
    }

    /// Writes both private keys (mode 0600, atomically).
    ///
    /// # Errors
    /// If a file cannot be written.
    pub fn write_keys(&self, keys: &AgentKeys) -> anyhow::Result<()> {
        write_atomic(
            &self.path.join(X25519_KEY_FILE),
            keys.x25519_secret_bytes().as_slice(),
        )?;
        write_atomic(
            &self.path.join(ED25519_KEY_FILE),
            keys.ed25519_seed().as_slice(),
        )?;
        Ok(())
    }

    /// Loads both private keys, refusing files that others can read.
    ///
    /// # Errors
    /// If a file is missing, has the wrong size or too open a mode.
    pub fn load_keys(&self) -> anyhow::Result<AgentKeys> {
        let x = read_key(&self.path.join(X25519_KEY_FILE))?;
        let e = read_key(&self.path.join(ED25519_KEY_FILE))?;
        Ok(AgentKeys::from_bytes(&x, &e))
    }

    /// Writes the enrollment record (atomically; mode 0600).
    ///
    /// # Errors
    /// If the file cannot be written.
    pub fn write_enrollment(&self, e: &Enrollment) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(e).context("cannot encode enrollment record")?;
        json.push(b'\n');
        write_atomic(&self.path.join(ENROLLMENT_FILE), &json)
    }

    /// Loads the enrollment record.
    ///
    /// # Errors
    /// If the agent is not enrolled or the record is unreadable.
    pub fn load_enrollment(&self) -> anyhow::Result<Enrollment> {
        let p = self.path.join(ENROLLMENT_FILE);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
                "this agent is not enrolled (no {}); run `picket-agent enroll` first",
                p.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", p.display()))
    }
}

impl StateDir {
    /// Records that the server revoked this agent (contents: Unix seconds).
    ///
    /// # Errors
    /// If the marker cannot be written.
    pub fn mark_revoked(&self) -> anyhow::Result<()> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        write_atomic(&self.path.join(REVOKED_FILE), format!("{now}\n").as_bytes())
    }

    /// When the server revoked this agent (Unix seconds), if it did.
    pub fn revoked_at(&self) -> Option<i64> {
        let text = fs::read_to_string(self.path.join(REVOKED_FILE)).ok()?;
        Some(text.trim().parse().unwrap_or(0))
    }
}

/// Writes `data` to `path` atomically: a temporary file in the same
/// directory, created with mode 0600, fsynced, renamed over `path`, then the
/// directory fsynced so the rename itself is durable.
///
/// # Errors
/// Any I/O error, with the path in context.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let result = (|| -> io::Result<()> {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Fsyncs a directory so that a rename or creation inside it is durable (no-op off unix).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    read_secret::<32>(path)
}

/// Reads a secret file of exactly `N` bytes, refusing one that group or
/// others can access.
///
/// # Errors
/// If the file is missing, has the wrong size or too open a mode.
pub(crate) fn read_secret<const N: usize>(path: &Path) -> anyhow::Result<Zeroizing<[u8; N]>> {
    let mut f = File::open(path).with_context(|| {
        format!(
            "cannot open key file {} (is the agent enrolled?)",
            path.display()
        )
    })?;
    let meta = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "key file {} has mode {mode:04o}: group/other must have no access; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    if meta.len() != N as u64 {
        bail!(
            "key file {} must hold exactly {N} bytes (it holds {})",
            path.display(),
            meta.len()
        );
    }
    let mut buf = Zeroizing::new([0u8; N]);
    f.read_exact(buf.as_mut_slice())
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(buf)
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn keys_are_0600_and_dir_0700_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path().join("a/b"));
        sd.create().unwrap();
        assert_eq!(mode(sd.path()), 0o700);
        let keys = AgentKeys::generate().unwrap();
        sd.write_keys(&keys).unwrap();
        assert_eq!(mode(&sd.path().join(X25519_KEY_FILE)), 0o600);
        assert_eq!(mode(&sd.path().join(ED25519_KEY_FILE)), 0o600);
        let back = sd.load_keys().unwrap();
        assert_eq!(back.ed25519_public(), keys.ed25519_public());
        assert_eq!(back.x25519_public(), keys.x25519_public());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(sd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn existing_dir_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("s");
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::new(&p).create().unwrap();
        assert_eq!(mode(&p), 0o700);
    }

    #[test]
    fn group_readable_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path());
        sd.write_keys(&AgentKeys::generate().unwrap()).unwrap();
        let p = sd.path().join(ED25519_KEY_FILE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = format!("{:#}", sd.load_keys().unwrap_err());
        assert!(e.contains("0640") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn enrollment_round_trip_and_missing_is_clear() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::new(tmp.path());
        let e = format!("{:#}", sd.load_enrollment().unwrap_err());
        assert!(e.contains("not enrolled"), "{e}");
        let en = Enrollment {
            agent_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            server_url: "https://picket.example".into(),
            server_signing_key: B64([3; 32]),
            key_id: KeyFingerprint([4; 32]),
        };
        sd.write_enrollment(&en).unwrap();
        assert!(sd.is_enrolled());
        assert_eq!(sd.load_enrollment().unwrap(), en);
        assert_eq!(mode(&sd.path().join(ENROLLMENT_FILE)), 0o600);
    }
}
