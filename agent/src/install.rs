//! `picket-agent service prepare`: makes the configuration and state folder
//! the Windows installer needs, run by the MSI as SYSTEM on every install and
//! upgrade (`installers/msi/picket-agent.wxs`, custom action `PrepareData`).
//!
//! Creates the folder, copies `agent.toml.example` / `policy.toml.example`
//! from next to the executable to `agent.toml` / `policy.toml` only when
//! those do not exist yet (an upgrade keeps the customer's files), and on
//! Windows resets the folder's ACL with `icacls` to SYSTEM and
//! Administrators (full control) plus LocalService, the service account
//! (modify: it writes keys, ledger and journal), inherited below. The MSI
//! does this here because wixl has no `Permission` or `NeverOverwrite`.

use std::path::Path;

use anyhow::Context;

/// The files copied from `<name>.example` when absent.
const CONFIG_FILES: [&str; 2] = ["agent.toml", "policy.toml"];

/// What [`prepare`] did, one line each, for the installer's log.
///
/// # Errors
/// If the folder cannot be created, an example is missing or cannot be
/// copied, or (Windows) `icacls` fails.
pub fn prepare(data_dir: &Path, examples_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    restrict_acl(data_dir, &mut done)?;
    for name in CONFIG_FILES {
        let target = data_dir.join(name);
        if target.exists() {
            done.push(format!("kept {}", target.display()));
            continue;
        }
        let example = examples_dir.join(format!("{name}.example"));
        std::fs::copy(&example, &target).with_context(|| {
            format!("cannot copy {} to {}", example.display(), target.display())
        })?;
        done.push(format!(
            "created {} from {}",
            target.display(),
            example.display()
        ));
    }
    Ok(done)
}

#[cfg(windows)]
fn restrict_acl(dir: &Path, done: &mut Vec<String>) -> anyhow::Result<()> {
    // SIDs, not names, so a localized Windows works: S-1-5-18 SYSTEM,
    // S-1-5-32-544 Administrators, S-1-5-19 LocalService.
    let status = std::process::Command::new("icacls")
        .arg(dir)
        .args([
            "/inheritance:r",
            "/grant:r",
            "*S-1-5-18:(OI)(CI)F",
            "*S-1-5-32-544:(OI)(CI)F",
            "*S-1-5-19:(OI)(CI)M",
            "/T",
            "/Q",
        ])
        .status()
        .context("cannot run icacls")?;
    anyhow::ensure!(
        status.success(),
        "icacls failed on {}: {status}",
        dir.display()
    );
    done.push(format!(
        "ACL of {}: SYSTEM and Administrators full control, LocalService modify (inherited)",
        dir.display()
    ));
    Ok(())
}

#[cfg(not(windows))]
fn restrict_acl(dir: &Path, done: &mut Vec<String>) -> anyhow::Result<()> {
    // Elsewhere the packages set Unix modes (the Debian postinst); keep the folder private.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))?;
    done.push(format!("mode of {}: 0700", dir.display()));
    Ok(())
}
