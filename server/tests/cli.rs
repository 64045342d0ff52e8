//! The `picket-server` binary's commands, run as a user would.

use std::process::Command;

fn server() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_picket-server"));
    c.env_remove("PICKET_MASTER_SECRET")
        .env_remove("PICKET_MASTER_SECRET_FILE")
        .env_remove("PICKET_CONFIG");
    c
}

#[test]
fn missing_master_secret_is_a_clear_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = server()
        .env("PICKET_DATA_DIR", dir.path())
        .args(["--config", "/nonexistent/picket.toml", "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/picket.toml"), "{err}");
    let out = server()
        .env("PICKET_DATA_DIR", dir.path())
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("master_secret: required"), "{err}");
}

#[test]
fn gen_secret_then_check_config_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = server().arg("gen-secret").output().unwrap();
    assert!(out.status.success());
    let secret = String::from_utf8(out.stdout).unwrap();
    assert_eq!(secret.trim().len(), 64, "48 bytes of base64");
    let secret_file = dir.path().join("master.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\nmaster_secret_file = \"{}\"\n",
            dir.path().join("data").display(),
            secret_file.display()
        ),
    )
    .unwrap();
    let out = server()
        .args(["--config"])
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    assert!(
        dir.path().join("data/picket.db").exists(),
        "the SQLite database is created and migrated"
    );
}

#[test]
fn unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, "master_secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\nlisten_addr = \"0.0.0.0:1\"\n").unwrap();
    let out = server()
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_addr"));
}
