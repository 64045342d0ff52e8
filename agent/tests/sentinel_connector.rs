//! The Sentinel connector against the Sentinel simulator over real HTTP:
//! every operation of the connector interface, token caching and renewal,
//! etags, paging, throttling and every fault mapped to its error class.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use picket_agent::siem::{Connector, TestEvent, TimeWindow, sentinel};
use picket_proto::{
    Credential, ErrorClass, RuleSpec, Schedule, SentinelIngestion, SentinelSettings, Severity,
    SiemSettings, SiemTarget, managed_rule_name,
};
use picket_siem_sim::sentinel::{Fault, ScriptedRun, SentinelSim, SentinelSimHandle, StoredEvent};
use serde_json::json;
use uuid::Uuid;

const CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SECRET: &str = "sentinel-client-secret";
const TABLE: &str = "PicketTest_CL";

async fn start_sim(page_size: usize) -> SentinelSimHandle {
    SentinelSim::builder()
        .client(CLIENT, SECRET)
        .page_size(page_size)
        .start()
        .await
        .expect("start the simulator")
}

fn http(timeout: Duration) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

fn settings(base: &str, secret: &str) -> SentinelSettings {
    SentinelSettings {
        subscription_id: "00000000-0000-0000-0000-000000000001".into(),
        resource_group: "soc-rg".into(),
        workspace_name: "soc-workspace".into(),
        workspace_id: "00000000-0000-0000-0000-0000000000aa".into(),
        tenant_id: "00000000-0000-0000-0000-0000000000bb".into(),
        client_id: CLIENT.into(),
        client_secret: Credential::new(secret.into()),
        management_url: base.into(),
        login_url: base.into(),
        log_analytics_url: base.into(),
        ingestion: Some(SentinelIngestion {
            endpoint: base.into(),
            dcr_immutable_id: "dcr-00000000000000000000000000000000".into(),
            stream: format!("Custom-{TABLE}"),
            table: TABLE.into(),
        }),
    }
}

fn connector_with(base: &str, secret: &str, timeout: Duration) -> Connector {
    let target = SiemTarget {
        connection_id: Uuid::now_v7(),
        name: "sentinel-prod".into(),
        settings: SiemSettings::Sentinel(settings(base, secret)),
    };
    Connector::new(&target, http(timeout))
}

fn connector(base: &str) -> Connector {
    connector_with(base, SECRET, Duration::from_secs(10))
}

fn rule(rule_id: Uuid, version: u32) -> RuleSpec {
    RuleSpec {
        rule_id,
        version,
        title: "Brute force against one account".into(),
        description: "More than 20 failed logons for one user in 5 minutes.".into(),
        severity: Severity::High,
        query: "SecurityEvent | where EventID == 4625 | summarize n = count() by Account | where n > 20".into(),
        schedule: Schedule {
            cron: "*/5 * * * *".into(),
            earliest: "-5m".into(),
            latest: "now".into(),
        },
    }
}

#[tokio::test]
async fn rule_lifecycle_create_update_disable_enable_delete_with_hashes() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    let name = managed_rule_name(&id);

    let h1 = c.deploy(&rule(id, 1)).await.expect("deploy");
    let stored = sim.rule(&name).expect("rule created");
    assert_eq!(stored.kind, "Scheduled");
    assert_eq!(stored.properties["queryFrequency"], "PT5M");
    assert_eq!(stored.properties["queryPeriod"], "PT5M");
    assert_eq!(stored.properties["severity"], "High");
    assert_eq!(stored.properties["enabled"], true);
    assert_eq!(stored.properties["triggerOperator"], "GreaterThan");
    assert_eq!(
        c.content_hash(&id).await,
        Ok(h1),
        "read-back hash equals the deploy hash"
    );

    // Update in place: the connector sends the current etag.
    let mut v2 = rule(id, 2);
    v2.query = "SecurityEvent | where EventID == 4740".into();
    let h2 = c.deploy(&v2).await.expect("update");
    assert_ne!(h1, h2);
    assert_eq!(sim.rules().len(), 1);
    let bodies = sim.received_bodies();
    assert!(bodies[0].get("etag").is_none(), "a create carries no etag");
    assert!(
        bodies[1]["etag"].as_str().is_some(),
        "an update carries the etag"
    );
    assert_eq!(
        sim.rule(&name).unwrap().properties["query"],
        "SecurityEvent | where EventID == 4740"
    );

    // A change behind Picket's back is drift.
    let mut changed = sim.rule(&name).unwrap().properties;
    changed["query"] = json!("SecurityEvent");
    sim.insert_rule(&name, "Scheduled", changed);
    assert_ne!(c.content_hash(&id).await, Ok(h2));
    // Redeploy after someone else's change: re-reads the new etag, succeeds.
    assert_eq!(c.deploy(&v2).await, Ok(h2));
    assert_eq!(c.content_hash(&id).await, Ok(h2));

    c.set_enabled(&id, false).await.expect("disable");
    assert_eq!(sim.rule(&name).unwrap().properties["enabled"], false);
    let last = sim.received_bodies().pop().unwrap();
    assert_eq!(last["properties"]["enabled"], false);
    assert!(
        last["properties"].get("lastModifiedUtc").is_none(),
        "read-only fields are not sent back"
    );
    c.set_enabled(&id, true).await.expect("enable");
    assert_eq!(sim.rule(&name).unwrap().properties["enabled"], true);

    c.delete(&id).await.expect("delete");
    assert!(sim.rule(&name).is_none());
    assert_eq!(c.delete(&id).await, Err(ErrorClass::NotFound));
    assert_eq!(c.set_enabled(&id, false).await, Err(ErrorClass::NotFound));
    assert_eq!(c.content_hash(&id).await, Err(ErrorClass::NotFound));
}

#[tokio::test]
async fn listing_follows_next_link_and_returns_only_managed_rules() {
    let sim = start_sim(2).await;
    let c = connector(&sim.base_url());
    sim.insert_rule(
        "customer-rule",
        "Scheduled",
        json!({"displayName": "theirs"}),
    );
    sim.insert_rule(
        "picket-not-a-uuid",
        "Scheduled",
        json!({"displayName": "lookalike"}),
    );
    let mut ids = Vec::new();
    for _ in 0..5 {
        let id = Uuid::now_v7();
        c.deploy(&rule(id, 1)).await.expect("deploy");
        ids.push(id);
    }
    let mut listed = c.list_managed().await.expect("list");
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "7 rules over 4 pages, 5 of them Picket's");
    assert_eq!(
        sim.rule("customer-rule").unwrap().properties["displayName"],
        "theirs"
    );
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_refused_and_gets_no_token() {
    let other = SentinelSim::builder()
        .client(CLIENT, SECRET)
        .start()
        .await
        .unwrap();
    let sim = SentinelSim::builder()
        .client(CLIENT, SECRET)
        .page_size(1)
        .next_link_base(other.base_url())
        .start()
        .await
        .unwrap();
    let c = connector(&sim.base_url());
    c.deploy(&rule(Uuid::now_v7(), 1)).await.expect("deploy");
    c.deploy(&rule(Uuid::now_v7(), 1)).await.expect("deploy");
    assert_eq!(c.list_managed().await, Err(ErrorClass::SiemError));
    assert_eq!(
        other.total_request_count(),
        0,
        "nothing, token included, went to the other origin"
    );
}

#[tokio::test]
async fn tokens_are_cached_and_renewed_when_expired() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    c.check_connection().await.expect("check");
    c.list_managed().await.expect("list");
    assert_eq!(sim.tokens_issued(), 1, "one ARM token for both calls");
    // Another connector for the same app (a later job) reuses the cached token.
    connector(&sim.base_url())
        .check_connection()
        .await
        .expect("check");
    assert_eq!(sim.tokens_issued(), 1);

    sim.expire_tokens();
    c.check_connection()
        .await
        .expect("a 401 for an expired token renews it once");
    assert_eq!(sim.tokens_issued(), 2);

    // Log Analytics has its own scope, so its own token.
    c.count_test_matches("Account == \"x\"", TimeWindow::last(3600))
        .await
        .expect("count");
    assert_eq!(sim.tokens_issued(), 3);
}

#[tokio::test]
async fn a_wrong_secret_is_auth_failed_before_any_rule_call() {
    let sim = start_sim(50).await;
    let c = connector_with(&sim.base_url(), "wrong-secret", Duration::from_secs(10));
    assert_eq!(c.check_connection().await, Err(ErrorClass::AuthFailed));
    assert_eq!(
        c.deploy(&rule(Uuid::now_v7(), 1)).await,
        Err(ErrorClass::AuthFailed)
    );
    assert_eq!(sim.request_count(), 0, "no alertRules call without a token");
}

#[tokio::test]
async fn faults_map_to_error_classes() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    // Warm the token cache so the faults hit ARM itself.
    c.check_connection().await.expect("check");
    for (status, class) in [
        (401, ErrorClass::AuthFailed),
        (403, ErrorClass::Forbidden),
        (404, ErrorClass::NotFound),
        (409, ErrorClass::Conflict),
        (412, ErrorClass::Conflict),
        (500, ErrorClass::SiemError),
        (503, ErrorClass::SiemError),
    ] {
        sim.set_fault(Some(Fault::Status(status)));
        assert_eq!(c.check_connection().await, Err(class), "status {status}");
    }
    sim.set_fault(None);
    c.check_connection().await.expect("healthy again");
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after_then_reported() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    c.check_connection().await.expect("check");
    let before = sim.total_request_count();
    sim.set_fault_times(
        Some(Fault::RateLimited {
            retry_after_secs: 1,
        }),
        Some(2),
    );
    c.deploy(&rule(Uuid::now_v7(), 1))
        .await
        .expect("deploy succeeds after two 429s");
    // GET answered 429 twice then 404, then one PUT.
    assert_eq!(sim.total_request_count() - before, 4);

    sim.set_fault(Some(Fault::RateLimited {
        retry_after_secs: 0,
    }));
    let before = sim.total_request_count();
    assert_eq!(c.check_connection().await, Err(ErrorClass::RateLimited));
    assert_eq!(
        sim.total_request_count() - before,
        4,
        "one call and three retries"
    );
}

#[tokio::test]
async fn slow_and_dropped_answers_are_timeout_and_unreachable() {
    let sim = start_sim(50).await;
    let c = connector_with(&sim.base_url(), SECRET, Duration::from_millis(500));
    c.check_connection().await.expect("check");
    sim.set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    assert_eq!(c.check_connection().await, Err(ErrorClass::Timeout));
    sim.set_fault(Some(Fault::DropConnection));
    assert_eq!(c.check_connection().await, Err(ErrorClass::SiemUnreachable));
}

#[tokio::test]
async fn refused_rule_bodies_and_unschedulable_rules_are_query_invalid() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    let mut untitled = rule(Uuid::now_v7(), 1);
    untitled.title = "  ".into();
    assert_eq!(
        c.deploy(&untitled).await,
        Err(ErrorClass::QueryInvalid),
        "ARM refuses an empty displayName"
    );
    let mut weekly = rule(Uuid::now_v7(), 1);
    weekly.schedule.cron = "0 9 * * 1".into();
    let before = sim.total_request_count();
    assert_eq!(c.deploy(&weekly).await, Err(ErrorClass::QueryInvalid));
    assert_eq!(sim.total_request_count(), before, "refused before any call");
}

fn event(secs_ago: i64, account: &str, event_id: &str) -> TestEvent {
    TestEvent {
        time: time::OffsetDateTime::now_utc().unix_timestamp() - secs_ago,
        fields: BTreeMap::from([
            ("Account".to_owned(), account.to_owned()),
            ("EventID".to_owned(), event_id.to_owned()),
        ]),
    }
}

#[tokio::test]
async fn test_events_are_ingested_and_counted_within_the_window_only() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    let injected = c
        .inject_test_events(&[
            event(60, "alice", "4625"),
            event(30, "alice", "4625"),
            event(10, "bob", "4625"),
        ])
        .await
        .expect("inject");
    assert_eq!(injected, 3);
    let stored = sim.events(TABLE);
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|e| e.fields["Source"] == "picket_test"));
    // A real event that matches is not a test event.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    sim.insert_events(
        TABLE,
        vec![StoredEvent {
            time: now - 20,
            fields: BTreeMap::from([
                ("Account".into(), "alice".into()),
                ("EventID".into(), "4625".into()),
            ]),
        }],
    );
    let filter = "EventID == \"4625\" and Account == \"alice\"";
    assert_eq!(
        c.count_test_matches(filter, TimeWindow::last(3600)).await,
        Ok(2)
    );
    let old = TimeWindow {
        from: now - 7200,
        to: now - 3600,
    };
    assert_eq!(c.count_test_matches(filter, old).await, Ok(0));
    assert_eq!(
        c.count_test_matches("EventID matches regex \"4.*\"", TimeWindow::last(3600))
            .await,
        Err(ErrorClass::QueryInvalid),
        "a query Log Analytics refuses (400) is query_invalid"
    );
    assert_eq!(
        c.inject_test_events(&[]).await,
        Err(ErrorClass::MalformedJob)
    );
}

#[tokio::test]
async fn health_reduces_sentinel_health_to_numbers() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    c.deploy(&rule(id, 1)).await.expect("deploy");
    sim.script_runs(
        &managed_rule_name(&id),
        vec![
            ScriptedRun::success(3000, 4, 1),
            ScriptedRun::success(2000, 0, 0),
            ScriptedRun::success(1000, 7, 2),
            ScriptedRun::failure(700),
            ScriptedRun::skipped(300),
        ],
    );
    let h = c
        .rule_health(&id, TimeWindow::last(24 * 3600))
        .await
        .expect("health");
    assert_eq!((h.runs_succeeded, h.runs_failed, h.runs_skipped), (3, 1, 1));
    assert_eq!(h.results_total, Some(11));
    assert_eq!(h.alerts_fired, Some(3));
    let last = h.last_run_at.expect("last run");
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - last - 300).abs() < 60);
    let none = c
        .rule_health(&Uuid::now_v7(), TimeWindow::last(3600))
        .await
        .expect("health");
    assert_eq!(
        (none.runs_succeeded, none.runs_failed, none.last_run_at),
        (0, 0, None)
    );
}

#[test]
fn deployed_properties_follow_the_severity_mapping() {
    assert_eq!(sentinel::sentinel_severity(Severity::Critical), "High");
    assert_eq!(sentinel::sentinel_severity(Severity::Info), "Informational");
}

/// Monitoring mode: the rule runs with incident creation off; its hash
/// differs from the active one (drift checks and dry runs tell the modes
/// apart) and equals what a read-back finds; promotion (an active deploy)
/// turns incidents back on; someone switching incidents on in the portal is
/// drift.
#[tokio::test]
async fn monitoring_mode_turns_incident_creation_off_and_promotion_back_on() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    let name = managed_rule_name(&id);
    let r = rule(id, 1);

    let monitored = c.deploy_mode(&r, true).await.expect("deploy monitored");
    let stored = sim.rule(&name).expect("created");
    assert_eq!(stored.properties["enabled"], true, "it still runs");
    assert_eq!(
        stored.properties["incidentConfiguration"]["createIncident"],
        false
    );
    assert_eq!(c.content_hash(&id).await, Ok(monitored));
    assert_eq!(c.expected_hash(&r, true), Ok(monitored));
    let active = c.expected_hash(&r, false).unwrap();
    assert_ne!(monitored, active, "the modes hash apart");

    // Disabling keeps the mode (the rule is read back and re-sent).
    c.set_enabled(&id, false).await.expect("disable");
    assert_eq!(
        sim.rule(&name).unwrap().properties["incidentConfiguration"]["createIncident"],
        false
    );
    c.set_enabled(&id, true).await.expect("enable");
    assert_eq!(c.content_hash(&id).await, Ok(monitored));

    // Incidents switched on behind Picket's back: drift.
    let mut changed = sim.rule(&name).unwrap().properties;
    changed["incidentConfiguration"]["createIncident"] = json!(true);
    sim.insert_rule(&name, "Scheduled", changed);
    assert_eq!(c.content_hash(&id).await, Ok(active));
    assert_ne!(c.content_hash(&id).await, Ok(monitored));

    // Promotion: the same version, active.
    c.deploy_mode(&r, true).await.expect("back to monitoring");
    assert_eq!(c.deploy_mode(&r, false).await, Ok(active));
    let stored = sim.rule(&name).unwrap();
    assert_eq!(
        stored.properties["incidentConfiguration"]["createIncident"],
        true
    );
    assert_eq!(c.content_hash(&id).await, Ok(active));
    // An active rule hashes as before monitoring mode existed: the managed
    // properties only, so rules deployed by earlier agents show no drift.
    let picked =
        picket_agent::siem::canonical::pick(&stored.properties, &sentinel::MANAGED_PROPERTIES);
    assert_eq!(active, picket_agent::siem::canonical::hash(&picked));
}

/// `read_rule` normalizes a Scheduled rule back to the rule model: what
/// Picket deployed reads back as the rule it came from (severity,
/// schedule in Sentinel's own form, no "Managed by Picket" note), and an
/// edit in the portal shows in it.
#[tokio::test]
async fn read_rule_normalizes_the_rule_back_to_the_rule_model() {
    let sim = start_sim(50).await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    let name = managed_rule_name(&id);
    let mut r = rule(id, 3);
    r.schedule.cron = "0 */2 * * *".into();
    r.schedule.earliest = "-1d".into();
    c.deploy_mode(&r, true).await.expect("deploy");
    let got = c.read_rule(&id).await.expect("read");
    assert_eq!(got.title, r.title);
    assert_eq!(got.description, r.description);
    assert_eq!(got.severity, Severity::High);
    assert_eq!(got.query, r.query);
    assert_eq!(got.schedule.frequency.as_deref(), Some("PT2H"));
    assert_eq!(got.schedule.lookback.as_deref(), Some("P1D"));
    assert_eq!(got.schedule.cron, None);
    assert!(got.monitoring);
    assert!(got.enabled);

    let mut changed = sim.rule(&name).unwrap().properties;
    changed["query"] = json!("SecurityEvent | where EventID == 4740");
    changed["severity"] = json!("Informational");
    changed["queryFrequency"] = json!("PT15M");
    changed["enabled"] = json!(false);
    changed["description"] = json!("Rewritten in the portal.");
    sim.insert_rule(&name, "Scheduled", changed);
    let got = c.read_rule(&id).await.expect("read");
    assert_eq!(got.query, "SecurityEvent | where EventID == 4740");
    assert_eq!(got.severity, Severity::Info);
    assert_eq!(got.schedule.frequency.as_deref(), Some("PT15M"));
    assert_eq!(got.description, "Rewritten in the portal.");
    assert!(!got.enabled);
    assert!(got.within_bounds());

    // No query: not a rule Picket can record.
    let mut broken = sim.rule(&name).unwrap().properties;
    broken.as_object_mut().unwrap().remove("query");
    sim.insert_rule(&name, "Scheduled", broken);
    assert_eq!(c.read_rule(&id).await, Err(ErrorClass::SiemError));
    c.delete(&id).await.expect("delete");
    assert_eq!(c.read_rule(&id).await, Err(ErrorClass::NotFound));
}
