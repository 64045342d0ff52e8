//! `picket-agent check-config` and `picket-agent service prepare` with the
//! real binary, on the shipped examples (config-examples/) and on broken
//! copies: what an installer and an admin see.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-examples")
}

/// Runs the agent with `args`; returns (success, stdout, stderr).
fn agent(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-agent"))
        .args(args)
        .env_remove("PICKET_AGENT_CONFIG")
        .env_remove("PICKET_AGENT_STATE_DIR")
        .env_remove("PICKET_AGENT_POLICY_FILE")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The shipped agent.toml, pointed at a state dir and the shipped policy.toml.
fn config_with_policy(dir: &Path, policy: &Path) -> PathBuf {
    let text = std::fs::read_to_string(examples().join("agent.toml")).unwrap();
    let text = text.replace(
        "state_dir = \"/var/lib/picket-agent\"",
        &format!(
            "state_dir = \"{}\"\npolicy_file = \"{}\"",
            dir.join("state").display(),
            policy.display()
        ),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn shipped_examples_pass_and_are_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_policy(dir.path(), &examples().join("policy.toml"));
    let (ok, out, err) = agent(&["--config", config.to_str().unwrap(), "check-config"]);
    assert!(ok, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("config file: {} (ok)", config.display())));
    assert!(out.contains("not enrolled yet") || out.contains("does not exist yet"));
    assert!(out.contains(
        "policy: allowed job kinds: deploy_rule, disable_rule, delete_rule, check_connection"
    ));
    assert!(out.contains("policy: max jobs per hour: 1000"));
    assert!(out.trim_end().ends_with("configuration ok"));
}

#[test]
fn a_bad_policy_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "allow_kinds = [\"deploy_rule\"]\nmax_jobs_per_hour = 0\n",
    )
    .unwrap();
    let config = config_with_policy(dir.path(), &policy);
    let (ok, out, err) = agent(&["--config", config.to_str().unwrap(), "check-config"]);
    assert!(!ok, "accepted: {out}");
    assert!(err.contains(&policy.display().to_string()), "{err}");
    assert!(
        err.contains("`max_jobs_per_hour`: 0 is out of range"),
        "{err}"
    );
    assert!(!out.contains("configuration ok"));
}

#[test]
fn a_missing_configured_policy_and_a_bad_agent_key_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_policy(dir.path(), &dir.path().join("absent.toml"));
    let (ok, _, err) = agent(&["--config", config.to_str().unwrap(), "check-config"]);
    assert!(!ok);
    assert!(err.contains("cannot read policy file"), "{err}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "siem_timeout_secs = 0\n").unwrap();
    let (ok, _, err) = agent(&["--config", bad.to_str().unwrap(), "check-config"]);
    assert!(!ok);
    assert!(
        err.contains("`siem_timeout_secs`: 0 is out of range"),
        "{err}"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "stat_dir = \"/x\"\n").unwrap();
    let (ok, _, err) = agent(&["--config", unknown.to_str().unwrap(), "check-config"]);
    assert!(!ok);
    assert!(err.contains("stat_dir"), "{err}");
}

#[test]
fn service_prepare_copies_examples_once_and_keeps_edits() {
    let dir = tempfile::tempdir().unwrap();
    let ex = dir.path().join("program-files");
    std::fs::create_dir(&ex).unwrap();
    std::fs::copy(examples().join("agent.toml"), ex.join("agent.toml.example")).unwrap();
    std::fs::copy(
        examples().join("policy.toml"),
        ex.join("policy.toml.example"),
    )
    .unwrap();
    let data = dir.path().join("ProgramData").join("Picket");
    let args = [
        "service",
        "prepare",
        "--data-dir",
        data.to_str().unwrap(),
        "--examples-dir",
        ex.to_str().unwrap(),
    ];
    let (ok, out, err) = agent(&args);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("created"), "{out}");
    assert_eq!(
        std::fs::read(data.join("policy.toml")).unwrap(),
        std::fs::read(examples().join("policy.toml")).unwrap()
    );
    // An admin's edit survives the next install or upgrade.
    std::fs::write(data.join("policy.toml"), "max_jobs_per_hour = 5\n").unwrap();
    let (ok, out, _) = agent(&args);
    assert!(ok);
    assert!(
        out.contains(&format!("kept {}", data.join("policy.toml").display())),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("policy.toml")).unwrap(),
        "max_jobs_per_hour = 5\n"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

#[test]
fn service_run_outside_windows_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_picket-agent"))
        .args(["service", "run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Windows service control manager"));
}
