//! The Elastic connector against the Elastic simulator over real HTTP: every
//! operation of the connector interface, spaces, paging, throttling and every
//! fault mapped to its error class.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use picket_agent::siem::{Connector, TestEvent, TimeWindow};
use picket_proto::{
    Credential, ElasticSettings, ErrorClass, RuleSpec, Schedule, Severity, SiemSettings,
    SiemTarget, managed_rule_name,
};
use picket_siem_sim::elastic::{ElasticSim, ElasticSimHandle, Fault, ScriptedRun};
use serde_json::json;
use uuid::Uuid;

const KEY: &str = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";
const INDEX: &str = "picket-test";

async fn start_sim() -> ElasticSimHandle {
    ElasticSim::builder()
        .api_key(KEY)
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

fn connector_with(base: &str, key: &str, space: Option<&str>, timeout: Duration) -> Connector {
    let target = SiemTarget {
        connection_id: Uuid::now_v7(),
        name: "elastic-prod".into(),
        settings: SiemSettings::Elastic(ElasticSettings {
            kibana_url: base.into(),
            elasticsearch_url: base.into(),
            space: space.map(str::to_owned),
            api_key: Credential::new(key.into()),
            test_index: INDEX.into(),
        }),
    };
    Connector::new(&target, http(timeout))
}

fn connector(base: &str) -> Connector {
    connector_with(base, KEY, None, Duration::from_secs(10))
}

fn rule(rule_id: Uuid, query: &str) -> RuleSpec {
    RuleSpec {
        rule_id,
        version: 1,
        title: "Brute force against one account".into(),
        description: "Failed logons.".into(),
        severity: Severity::Critical,
        query: query.into(),
        schedule: Schedule {
            cron: "*/5 * * * *".into(),
            earliest: "-10m".into(),
            latest: "now".into(),
        },
    }
}

#[tokio::test]
async fn rule_lifecycle_create_update_disable_enable_delete_with_hashes() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    let name = managed_rule_name(&id);

    let h1 = c
        .deploy(&rule(id, "event.code:4625"))
        .await
        .expect("deploy");
    let stored = sim.rule(&name).expect("created");
    assert_eq!(stored.body["type"], "query");
    assert_eq!(stored.body["language"], "kuery");
    assert_eq!(stored.body["severity"], "critical");
    assert_eq!(stored.body["risk_score"], 99);
    assert_eq!(stored.body["interval"], "5m");
    assert_eq!(stored.body["from"], "now-10m");
    assert_eq!(stored.body["tags"], json!(["picket"]));
    assert_eq!(c.content_hash(&id).await, Ok(h1));

    let h2 = c
        .deploy(&rule(id, "event.code:4740"))
        .await
        .expect("update (409, then PUT)");
    assert_ne!(h1, h2);
    assert_eq!(sim.rules().len(), 1);
    assert_eq!(sim.rule(&name).unwrap().body["query"], "event.code:4740");
    let ops: Vec<String> = sim
        .received_bodies()
        .into_iter()
        .map(|(op, _)| op)
        .collect();
    assert_eq!(ops, ["create", "create", "update"]);

    c.set_enabled(&id, false).await.expect("disable");
    assert!(!sim.rule(&name).unwrap().enabled());
    assert_ne!(
        c.content_hash(&id).await,
        Ok(h2),
        "a disabled rule has drifted"
    );
    c.set_enabled(&id, true).await.expect("enable");
    assert!(sim.rule(&name).unwrap().enabled());
    assert_eq!(c.content_hash(&id).await, Ok(h2));

    c.delete(&id).await.expect("delete");
    assert!(sim.rule(&name).is_none());
    assert_eq!(c.delete(&id).await, Err(ErrorClass::NotFound));
    assert_eq!(c.set_enabled(&id, true).await, Err(ErrorClass::NotFound));
}

#[tokio::test]
async fn eql_and_esql_rules_get_their_types() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let eql = Uuid::now_v7();
    c.deploy(&rule(eql, "process where process.name == \"mimikatz.exe\""))
        .await
        .expect("eql");
    assert_eq!(
        sim.rule(&managed_rule_name(&eql)).unwrap().body["type"],
        "eql"
    );
    let esql = Uuid::now_v7();
    c.deploy(&rule(
        esql,
        "FROM logs-* | WHERE event.code == \"4625\" | LIMIT 10",
    ))
    .await
    .expect("esql");
    let body = sim.rule(&managed_rule_name(&esql)).unwrap().body;
    assert_eq!(
        (body["type"].as_str(), body["language"].as_str()),
        (Some("esql"), Some("esql"))
    );
}

#[tokio::test]
async fn spaces_are_addressed_by_path() {
    let sim = start_sim().await;
    let c = connector_with(&sim.base_url(), KEY, Some("soc"), Duration::from_secs(10));
    let id = Uuid::now_v7();
    c.deploy(&rule(id, "event.code:4625"))
        .await
        .expect("deploy");
    assert_eq!(sim.rule(&managed_rule_name(&id)).unwrap().space, "soc");
    assert_eq!(
        connector(&sim.base_url()).content_hash(&id).await,
        Err(ErrorClass::NotFound),
        "not in the default space"
    );
}

#[tokio::test]
async fn listing_pages_through_find_and_returns_only_managed_rules() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    sim.insert_rule(
        "default",
        json!({"rule_id": "customer-1", "name": "theirs", "tags": ["picket"]}),
    );
    sim.insert_rule(
        "default",
        json!({"rule_id": "customer-2", "name": "theirs too", "tags": []}),
    );
    let mut ids = Vec::new();
    for _ in 0..103 {
        let id = Uuid::now_v7();
        c.deploy(&rule(id, "event.code:1")).await.expect("deploy");
        ids.push(id);
    }
    let mut listed = c.list_managed().await.expect("list");
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "two pages of 100");
    assert_eq!(sim.rule("customer-1").unwrap().body["name"], "theirs");
}

#[tokio::test]
async fn faults_map_to_error_classes() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    c.check_connection().await.expect("check");
    for (status, class) in [
        (401, ErrorClass::AuthFailed),
        (403, ErrorClass::Forbidden),
        (409, ErrorClass::Conflict),
        (500, ErrorClass::SiemError),
        (502, ErrorClass::SiemError),
    ] {
        sim.set_fault(Some(Fault::Status(status)));
        assert_eq!(c.check_connection().await, Err(class), "status {status}");
    }
    sim.set_fault(None);
    assert_eq!(
        connector_with(&sim.base_url(), "bad-key", None, Duration::from_secs(10))
            .check_connection()
            .await,
        Err(ErrorClass::AuthFailed)
    );
    sim.expire_keys();
    assert_eq!(
        c.check_connection().await,
        Err(ErrorClass::AuthFailed),
        "an expired key"
    );
}

#[tokio::test]
async fn throttling_is_retried_then_reported_and_slow_or_dropped_answers_are_classified() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    sim.set_fault_times(
        Some(Fault::RateLimited {
            retry_after_secs: 1,
        }),
        Some(1),
    );
    c.check_connection().await.expect("one 429 then success");
    sim.set_fault(Some(Fault::RateLimited {
        retry_after_secs: 0,
    }));
    assert_eq!(c.check_connection().await, Err(ErrorClass::RateLimited));
    let slow = connector_with(&sim.base_url(), KEY, None, Duration::from_millis(500));
    sim.set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    assert_eq!(slow.check_connection().await, Err(ErrorClass::Timeout));
    sim.set_fault(Some(Fault::DropConnection));
    assert_eq!(
        slow.check_connection().await,
        Err(ErrorClass::SiemUnreachable)
    );
}

#[tokio::test]
async fn invalid_rules_are_query_invalid() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let mut untitled = rule(Uuid::now_v7(), "event.code:1");
    untitled.title = String::new();
    assert_eq!(c.deploy(&untitled).await, Err(ErrorClass::QueryInvalid));
}

fn event(secs_ago: i64, user: &str) -> TestEvent {
    TestEvent {
        time: time::OffsetDateTime::now_utc().unix_timestamp() - secs_ago,
        fields: BTreeMap::from([
            ("event.code".to_owned(), "4625".to_owned()),
            ("user.name".to_owned(), user.to_owned()),
        ]),
    }
}

#[tokio::test]
async fn test_events_are_bulk_indexed_and_counted_within_the_window_only() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    assert_eq!(
        c.inject_test_events(&[event(50, "alice"), event(40, "alice"), event(30, "bob")])
            .await,
        Ok(3)
    );
    let docs = sim.documents(INDEX);
    assert_eq!(docs.len(), 3);
    assert!(
        docs.iter()
            .all(|d| d.fields["labels.picket"] == "picket_test")
    );
    assert_eq!(
        c.count_test_matches(
            "event.code:4625 AND user.name:alice",
            TimeWindow::last(3600)
        )
        .await,
        Ok(2)
    );
    assert_eq!(
        c.count_test_matches("user.name:carol", TimeWindow::last(3600))
            .await,
        Ok(0)
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        c.count_test_matches(
            "user.name:alice",
            TimeWindow {
                from: now - 7200,
                to: now - 3600
            }
        )
        .await,
        Ok(0)
    );
    assert_eq!(
        c.count_test_matches("nonsense", TimeWindow::last(60)).await,
        Err(ErrorClass::QueryInvalid)
    );
}

#[tokio::test]
async fn health_comes_from_the_last_execution() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    c.deploy(&rule(id, "event.code:4625"))
        .await
        .expect("deploy");
    let fresh = c
        .rule_health(&id, TimeWindow::last(3600))
        .await
        .expect("health");
    assert_eq!(
        (fresh.runs_succeeded, fresh.runs_failed, fresh.last_run_at),
        (0, 0, None)
    );
    let mut run = ScriptedRun::failure(120);
    run.duration_ms = 2500;
    run.gap_ms = 60_000;
    sim.script_runs(
        &managed_rule_name(&id),
        vec![ScriptedRun::success(600, 1, 1), run],
    );
    let h = c
        .rule_health(&id, TimeWindow::last(3600))
        .await
        .expect("health");
    assert_eq!((h.runs_succeeded, h.runs_failed, h.runs_skipped), (0, 1, 0));
    assert_eq!(h.last_run_duration_ms, Some(2750));
    assert_eq!(h.gap_ms, Some(60_000));
    assert_eq!((h.results_total, h.alerts_fired), (None, None));
}

/// Monitoring mode: an enabled building-block rule without actions, tagged
/// `picket-monitoring`; its hash differs from the active one and equals
/// what a read-back finds; promotion (an active deploy, a full replace)
/// clears all of it.
#[tokio::test]
async fn monitoring_mode_is_a_building_block_rule_without_actions_until_promoted() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    let name = managed_rule_name(&id);
    let r = rule(id, "event.code:4625 and user.name:alice");

    let monitored = c.deploy_mode(&r, true).await.expect("deploy monitored");
    let stored = sim.rule(&name).expect("created");
    assert!(stored.enabled(), "it still runs");
    assert_eq!(stored.body["building_block_type"], "default");
    assert_eq!(stored.body["actions"], json!([]));
    assert_eq!(stored.body["tags"], json!(["picket", "picket-monitoring"]));
    assert_eq!(c.content_hash(&id).await, Ok(monitored));
    assert_eq!(c.expected_hash(&r, true), Ok(monitored));
    let active = c.expected_hash(&r, false).unwrap();
    assert_ne!(monitored, active, "the modes hash apart");

    // Redeploying monitored is idempotent (update path after the 409).
    assert_eq!(c.deploy_mode(&r, true).await, Ok(monitored));

    // Promotion: the same version, active.
    assert_eq!(c.deploy_mode(&r, false).await, Ok(active));
    let stored = sim.rule(&name).unwrap();
    assert!(stored.body.get("building_block_type").is_none());
    assert_eq!(stored.body["tags"], json!(["picket"]));
    assert_eq!(c.content_hash(&id).await, Ok(active));

    // Someone turning the rule into a building block in Kibana: drift.
    let mut edited = stored.body.clone();
    edited["building_block_type"] = json!("default");
    sim.insert_rule("default", edited);
    assert_ne!(c.content_hash(&id).await, Ok(active));
}

/// `read_rule` normalizes a detection rule back to the rule model: what
/// Picket deployed reads back as the rule it came from (severity incl. the
/// info risk score, `interval`/`from`, no "Managed by Picket" note), and an
/// edit in Kibana shows in it.
#[tokio::test]
async fn read_rule_normalizes_the_rule_back_to_the_rule_model() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let id = Uuid::now_v7();
    let name = managed_rule_name(&id);
    let mut r = rule(id, "process where process.name == \"mimikatz.exe\"");
    r.severity = Severity::Info;
    c.deploy(&r).await.expect("deploy");
    let got = c.read_rule(&id).await.expect("read");
    assert_eq!(got.title, r.title);
    assert_eq!(got.description, r.description);
    assert_eq!(got.severity, Severity::Info);
    assert_eq!(got.query, r.query);
    assert_eq!(got.schedule.frequency.as_deref(), Some("5m"));
    assert_eq!(got.schedule.lookback.as_deref(), Some("now-10m"));
    assert!(!got.monitoring);
    assert!(got.enabled);

    let mut edited = sim.rule(&name).unwrap().body;
    edited["query"] = json!("event.code:4740");
    edited["severity"] = json!("low");
    edited["risk_score"] = json!(21);
    edited["interval"] = json!("1h");
    edited["building_block_type"] = json!("default");
    sim.insert_rule("default", edited);
    let got = c.read_rule(&id).await.expect("read");
    assert_eq!(got.query, "event.code:4740");
    assert_eq!(got.severity, Severity::Low);
    assert_eq!(got.schedule.frequency.as_deref(), Some("1h"));
    assert!(got.monitoring);
    c.delete(&id).await.expect("delete");
    assert_eq!(c.read_rule(&id).await, Err(ErrorClass::NotFound));
}

/// EQL event queries are counted with `_eql/search`, ES|QL filters with
/// `_query` (the source replaced by the test index), both bounded to the
/// test events (`labels.picket`) and the window.
#[tokio::test]
async fn eql_and_esql_test_filters_are_counted_within_the_window_only() {
    let sim = start_sim().await;
    let c = connector(&sim.base_url());
    let process = |secs_ago: i64, user: &str| {
        let mut e = event(secs_ago, user);
        e.fields.insert("event.category".into(), "process".into());
        e
    };
    assert_eq!(
        c.inject_test_events(&[
            process(50, "alice"),
            process(40, "alice"),
            process(30, "bob")
        ])
        .await,
        Ok(3)
    );
    let hour = TimeWindow::last(3600);
    assert_eq!(
        c.count_test_matches("process where user.name == \"alice\"", hour)
            .await,
        Ok(2)
    );
    assert_eq!(
        c.count_test_matches("network where user.name == \"alice\"", hour)
            .await,
        Ok(0),
        "another event category"
    );
    assert_eq!(
        c.count_test_matches(
            "FROM * | WHERE event.code == \"4625\" | WHERE user.name == \"bob\"",
            hour
        )
        .await,
        Ok(1)
    );
    assert_eq!(
        c.count_test_matches("FROM * | WHERE event.code == \"4625\"", hour)
            .await,
        Ok(3)
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let before = TimeWindow {
        from: now - 7200,
        to: now - 3600,
    };
    assert_eq!(
        c.count_test_matches("process where user.name == \"alice\"", before)
            .await,
        Ok(0)
    );
    assert_eq!(
        c.count_test_matches("FROM * | WHERE user.name == \"alice\"", before)
            .await,
        Ok(0)
    );
    assert_eq!(
        picket_agent::siem::elastic::esql_count_query("FROM * | WHERE a == \"1\"", "picket-test"),
        Ok("FROM picket-test | WHERE a == \"1\" | STATS picket_count = COUNT(*)".to_owned())
    );
}
