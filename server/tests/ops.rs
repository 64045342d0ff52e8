//! Operator endpoints: `/healthz`, `/readyz` and `/metrics` (bearer token,
//! OpenMetrics text, no tenant data in labels), on the real server.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::app;

const TOKEN: &str = "scrape-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_with_a_token() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("metrics.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let t = app()
        .with_env("PICKET_METRICS_TOKEN_FILE", token_file.to_str().unwrap())
        .with_env("PICKET_REPLICA_ID", "replica-a")
        .start()
        .await;

    let h = t.send("GET", "/healthz", None, None, &[]).await;
    assert_eq!((h.status, h.text.as_str()), (200, "ok"));
    let r = t.send("GET", "/readyz", None, None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "ready");

    // No token, a wrong token, a token in the wrong scheme: refused.
    for auth in [
        None,
        Some("Bearer not-the-token-0123456789"),
        Some(&*format!("Basic {TOKEN}")),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let a = t.send("GET", "/metrics", None, None, &headers).await;
        assert_eq!(a.status, 401, "{auth:?}: {}", a.text);
        assert!(!a.text.contains("picket_"), "nothing leaks: {}", a.text);
    }

    // Some traffic: a tenant's agent id in a path must not become a label.
    let admin = t
        .register("/v1/auth/claim", "Acme SOC", "admin@acme.test")
        .await;
    let foreign = uuid::Uuid::new_v4().to_string();
    let a = t.get(&format!("/v1/agents/{foreign}"), &admin).await;
    assert_eq!(a.status, 404);
    let a = t.send("GET", "/no/such/route", None, None, &[]).await;
    assert_eq!(a.status, 404);

    let m = t.send("GET", "/metrics", Some(TOKEN), None, &[]).await;
    assert_eq!(m.status, 200, "{}", m.text);
    let ct = m.headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let body = &m.text;
    for expected in [
        "picket_agents_connected{replica=\"replica-a\"} 0",
        "picket_outbox_depth 0",
        "picket_job_dispatch_latency_seconds_count 0",
        "picket_health_batch_write_seconds_count 0",
        "picket_health_reports_written_total 0",
        "picket_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/agents/{id}\",status=\"4xx\"} 1",
        "picket_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/auth/claim\",status=\"2xx\"} 1",
        "picket_http_request_duration_seconds_count{method=\"GET\",route=\"unmatched\",status=\"4xx\"} 1",
        "# EOF",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in:\n{body}");
    }
    assert!(
        !body.contains(&foreign),
        "an id from a path leaked into a label"
    );
    assert!(
        !body.contains("/no/such/route"),
        "an unmatched path became a label"
    );
    assert!(!body.contains("admin@acme.test") && !body.contains("Acme SOC"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_without_a_configured_token() {
    let t = app().start().await;
    let a = t.send("GET", "/metrics", Some(TOKEN), None, &[]).await;
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "metrics_disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_metrics_token_is_refused_at_start_up() {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("metrics.token");
    std::fs::write(&token_file, "short").unwrap();
    let mut env = std::collections::HashMap::new();
    env.insert(
        "PICKET_MASTER_SECRET".to_owned(),
        support::SECRET.to_owned(),
    );
    env.insert(
        "PICKET_METRICS_TOKEN_FILE".to_owned(),
        token_file.display().to_string(),
    );
    let err = picket_server::ServerConfig::load(None, false, &env)
        .expect_err("a 5-character token must be refused");
    let text = err.to_string();
    assert!(
        text.starts_with("PICKET_METRICS_TOKEN_FILE: expected a token of at least 16"),
        "{text}"
    );
}
