//! A small run of the load generator in `cargo test --workspace`: 50
//! simulated agents enroll, connect, and each receives, verifies, opens,
//! acknowledges and answers one approved deployment; then the echo floor
//! holds the same 50 connections; and 20 agents do the same over TLS
//! terminated by the server. Figures are printed, never asserted.

// Test code: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_loadgen::scenario::{self, Options, Scenario};

fn opts() -> Options {
    Options {
        agents: 50,
        sources: 2,
        server_bin: picket_loadgen::proc::sibling_bin("picket-server").unwrap(),
        database_url: None,
        admission: (2000, 4000),
        heartbeat_secs: 30,
        api_concurrency: 8,
        connect_spread: Duration::from_secs(1),
        settle_timeout: Duration::from_secs(300),
        tls: false,
        agent_bin: None,
        keep_server_log: None,
    }
}

/// `--tls`: the server terminates TLS itself (rustls) and the agents verify
/// its certificate against the run's CA; the same fan-out arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_agents_over_tls_receive_one_fan_out_each() {
    let opts = Options {
        agents: 20,
        tls: true,
        ..opts()
    };
    let r = scenario::run(&opts, Scenario::FanOut).await.unwrap();
    println!("{r}");
    assert!(
        r.lines.iter().any(|(k, v)| k == "tls" && v == "rustls"),
        "{r}"
    );
    assert_eq!(r.connected, 20, "{r}");
    assert_eq!(r.jobs_acked, 20, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agents_receive_one_fan_out_each() {
    let r = scenario::run(&opts(), Scenario::FanOut).await.unwrap();
    println!("{r}");
    assert_eq!(r.connected, 50, "{r}");
    assert_eq!(r.jobs_acked, 50, "{r}");
    assert_eq!(r.latencies.len(), 50, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_floor_holds_the_same_connections() {
    // The floor runs `picket-loadgen echo-server` as a child: the test
    // executable is not that binary, so point current_exe's sibling at it.
    let bin = picket_loadgen::proc::sibling_bin("picket-loadgen").unwrap();
    let out = tokio::process::Command::new(bin)
        .args(["--agents", "50", "--sources", "2", "floor"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("echo connections"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("echo connections"))
        .unwrap();
    assert!(line.trim_end().ends_with(" 50"), "{text}");
}
