//! The real agent at rest: a `picket-agent` binary (give it the release
//! build) enrolled with the server under test and left idle, connected, for
//! a while; its resident memory and CPU come from `/proc/<pid>`, and the
//! binary's size is reported as built and as `strip` would leave it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::scenario::Report;
use crate::setup::Admins;

/// Enrolls and runs `agent_bin` against `base` for `hold`, then reports.
///
/// # Errors
/// If enrollment fails, the agent exits, or it does not connect in time.
pub async fn measure(
    r: &mut Report,
    admins: &Admins,
    base: &str,
    agent_bin: &Path,
    ca_pem: Option<&[u8]>,
    dir: &Path,
    hold: Duration,
) -> anyhow::Result<()> {
    let size = std::fs::metadata(agent_bin)?.len();
    r.add("agent binary", format!("{:.1} MiB", mib(size)));
    // A stripped copy: what a package ships (cargo-deb strips too).
    let stripped = dir.join("picket-agent.stripped");
    std::fs::copy(agent_bin, &stripped)?;
    let strip = tokio::process::Command::new("strip")
        .arg(&stripped)
        .status()
        .await;
    if matches!(strip, Ok(s) if s.success()) {
        let size = std::fs::metadata(&stripped)?.len();
        r.add("agent binary stripped", format!("{:.1} MiB", mib(size)));
    } else {
        r.add("agent binary stripped", "(strip not available)");
    }

    let state = dir.join("agent-state");
    let cfg_path = dir.join("agent.toml");
    let mut cfg = format!("state_dir = \"{}\"\n", state.display());
    match ca_pem {
        Some(pem) => {
            let ca = dir.join("agent-ca.pem");
            std::fs::write(&ca, pem)?;
            cfg.push_str(&format!("ca_bundle = \"{}\"\n", ca.display()));
        }
        None => cfg.push_str("dangerous_plaintext = true\n"),
    }
    std::fs::write(&cfg_path, cfg)?;
    let t = admins
        .admin
        .post(
            "/v1/enrollment-tokens",
            &json!({ "label": "agent-at-rest" }),
        )
        .await?;
    let token_path = dir.join("agent.token");
    std::fs::write(&token_path, t["token"].as_str().context("token")?)?;
    let out = tokio::process::Command::new(agent_bin)
        .arg("--config")
        .arg(&cfg_path)
        .args(["enroll", "--server", base, "--token-file"])
        .arg(&token_path)
        .output()
        .await
        .context("running picket-agent enroll")?;
    anyhow::ensure!(
        out.status.success(),
        "picket-agent enroll failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let enrollment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("enrollment.json"))?)?;
    let id = enrollment["agent_id"]
        .as_str()
        .context("agent_id in enrollment.json")?
        .to_owned();
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let mut child = tokio::process::Command::new(agent_bin)
        .arg("--config")
        .arg(&cfg_path)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("spawning picket-agent run")?;
    let pid = child.id().context("agent pid")?;
    let start = Instant::now();
    loop {
        let v = admins.admin.get(&format!("/v1/agents/{id}")).await?;
        if v["connected"] == json!(true) {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the agent did not connect within 120 s; see {}",
            dir.join("agent.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past its start-up work (first health report, checkpoint) before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, cpu0) = crate::proc::usage(pid)?;
    let t = Instant::now();
    tokio::time::sleep(hold).await;
    let (rss, cpu1) = crate::proc::usage(pid)?;
    let secs = t.elapsed().as_secs_f64();
    r.add("agent rss at rest", format!("{:.1} MiB", mib(rss)));
    r.add(
        "agent cpu at rest",
        format!(
            "{:.2} % of one core over {secs:.0} s ({:.2} s CPU)",
            100.0 * (cpu1 - cpu0) / secs,
            cpu1 - cpu0
        ),
    );
    let v = admins.admin.get(&format!("/v1/agents/{id}")).await?;
    r.add("agent still connected", v["connected"] == json!(true));
    let _ = child.kill().await;
    Ok(())
}

#[allow(clippy::cast_precision_loss)] // sizes far below 2^52
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
