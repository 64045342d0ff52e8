//! The Splunk connector against the Splunk simulator over real HTTP: the rule
//! lifecycle, error classes for refusals and faults, and the health probe.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use picket_agent::siem::{self, ActionOk, Connector, splunk};
use picket_proto::{
    ConnectionInfo, Credential, ErrorClass, JobAction, RuleRef, RuleSpec, Schedule, Severity,
    SiemKind, SiemSettings, SiemTarget, SplunkSettings, managed_rule_name,
};
use picket_siem_sim::splunk::{Fault, SavedSearch, SplunkSim, SplunkSimHandle};
use uuid::Uuid;

const TOKEN: &str = "agent-test-token";

async fn start_sim() -> SplunkSimHandle {
    SplunkSim::builder()
        .token(TOKEN)
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

fn target(base_url: &str, token: &str) -> SiemTarget {
    SiemTarget {
        connection_id: Uuid::now_v7(),
        name: "splunk-prod".into(),
        settings: SiemSettings::Splunk(SplunkSettings {
            base_url: base_url.into(),
            app: "search".into(),
            owner: "nobody".into(),
            token: Credential::new(token.into()),
            login: None,
            hec: None,
        }),
    }
}

fn connector(base_url: &str, token: &str) -> Connector {
    Connector::new(&target(base_url, token), http(Duration::from_secs(5)))
}

fn rule(rule_id: Uuid, version: u32) -> RuleSpec {
    RuleSpec {
        rule_id,
        version,
        title: "Brute force against one account".into(),
        description: "More than 20 failed logons for one user in 5 minutes.".into(),
        severity: Severity::High,
        query: "index=wineventlog EventCode=4625 | stats count by user | where count > 20".into(),
        schedule: Schedule {
            cron: "*/5 * * * *".into(),
            earliest: "-5m".into(),
            latest: "now".into(),
        },
    }
}

fn deploy(rule: RuleSpec) -> JobAction {
    JobAction::DeployRule { rule }
}

fn rule_ref(rule_id: Uuid) -> RuleRef {
    RuleRef { rule_id }
}

/// A closed local port: bind an ephemeral one, then free it.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

fn content(search: &SavedSearch) -> BTreeMap<String, String> {
    search.content.clone()
}

#[tokio::test]
async fn deploy_creates_the_saved_search_with_the_rules_spl_schedule_and_alert_fields() {
    let sim = start_sim().await;
    let connector = connector(&sim.base_url(), TOKEN);
    let rule_id = Uuid::now_v7();
    let spec = rule(rule_id, 1);

    let ok = connector
        .execute(&deploy(spec.clone()))
        .await
        .expect("deploy");

    let name = managed_rule_name(&rule_id);
    assert!(name.starts_with("picket-"));
    let stored = sim.saved_search(&name).expect("created");
    assert_eq!(stored.app, "search");
    assert_eq!(stored.owner, "nobody");
    let fields = content(&stored);
    let expected: BTreeMap<String, String> = [
        ("search", spec.query.as_str()),
        ("cron_schedule", "*/5 * * * *"),
        ("is_scheduled", "1"),
        ("disabled", "0"),
        ("dispatch.earliest_time", "-5m"),
        ("dispatch.latest_time", "now"),
        ("alert_type", "number of events"),
        ("alert_comparator", "greater than"),
        ("alert_threshold", "0"),
        ("alert.track", "1"),
        ("alert.severity", "4"),
        ("actions", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([(
        "description".to_owned(),
        fields.get("description").cloned().unwrap_or_default(),
    )])
    .collect();
    assert_eq!(fields, expected);
    let description = &fields["description"];
    assert!(description.contains(&spec.title), "{description}");
    assert!(description.contains(&spec.description), "{description}");

    // The hash is over what Splunk now holds, so a drift check can recompute it.
    let hash = ok.content_hash.expect("a deploy reports its content hash");
    assert_eq!(hash, splunk::content_hash(&fields));
    assert_eq!(hash, splunk::content_hash(&splunk::deployed_fields(&spec)));
    assert_eq!(sim.request_count(), 1);
}

#[tokio::test]
async fn deploying_again_updates_in_place_and_re_enables() {
    let sim = start_sim().await;
    let connector = connector(&sim.base_url(), TOKEN);
    let rule_id = Uuid::now_v7();
    let name = managed_rule_name(&rule_id);
    let v1 = connector
        .execute(&deploy(rule(rule_id, 1)))
        .await
        .expect("v1");
    connector
        .execute(&JobAction::DisableRule {
            rule: rule_ref(rule_id),
        })
        .await
        .expect("disable");

    let mut spec = rule(rule_id, 2);
    spec.query = "index=wineventlog EventCode=4625 | stats count by user | where count > 50".into();
    spec.schedule.cron = "*/15 * * * *".into();
    spec.severity = Severity::Critical;
    let v2 = connector.execute(&deploy(spec.clone())).await.expect("v2");

    let all = sim.saved_searches();
    assert_eq!(all.len(), 1, "no duplicate: {all:?}");
    let stored = &all[0];
    assert_eq!(stored.name, name);
    assert_eq!(stored.content["search"], spec.query);
    assert_eq!(stored.content["cron_schedule"], "*/15 * * * *");
    assert_eq!(stored.content["alert.severity"], "5");
    assert_eq!(stored.content["disabled"], "0");
    assert_ne!(v1.content_hash, v2.content_hash);
    assert_eq!(v2.content_hash, Some(splunk::content_hash(&stored.content)));
    // create, disable, create (409), update.
    assert_eq!(sim.request_count(), 4);
}

#[tokio::test]
async fn disable_sets_disabled_and_delete_removes() {
    let sim = start_sim().await;
    let connector = connector(&sim.base_url(), TOKEN);
    let rule_id = Uuid::now_v7();
    let name = managed_rule_name(&rule_id);
    connector
        .execute(&deploy(rule(rule_id, 1)))
        .await
        .expect("deploy");

    let disabled = connector
        .execute(&JobAction::DisableRule {
            rule: rule_ref(rule_id),
        })
        .await
        .expect("disable");
    assert_eq!(
        disabled,
        ActionOk {
            content_hash: None,
            test_counts: None
        }
    );
    let stored = sim.saved_search(&name).expect("still there");
    assert_eq!(stored.content["disabled"], "1");
    assert_eq!(stored.content["search"], rule(rule_id, 1).query);

    let deleted = connector
        .execute(&JobAction::DeleteRule {
            rule: rule_ref(rule_id),
        })
        .await
        .expect("delete");
    assert_eq!(deleted.content_hash, None);
    assert!(sim.saved_search(&name).is_none());

    for action in [
        JobAction::DeleteRule {
            rule: rule_ref(rule_id),
        },
        JobAction::DisableRule {
            rule: rule_ref(rule_id),
        },
    ] {
        assert_eq!(connector.execute(&action).await, Err(ErrorClass::NotFound));
    }
}

#[tokio::test]
async fn customer_searches_are_never_touched() {
    let sim = start_sim().await;
    let theirs = SavedSearch {
        name: "Errors in the last hour".into(),
        app: "search".into(),
        owner: "admin".into(),
        content: BTreeMap::from([("search".to_owned(), "index=_internal error".to_owned())]),
    };
    sim.insert_saved_search(theirs.clone());
    let connector = connector(&sim.base_url(), TOKEN);
    let rule_id = Uuid::now_v7();
    connector
        .execute(&deploy(rule(rule_id, 1)))
        .await
        .expect("deploy");
    connector
        .execute(&JobAction::DeleteRule {
            rule: rule_ref(rule_id),
        })
        .await
        .expect("delete");
    assert_eq!(sim.saved_searches(), vec![theirs]);
}

#[tokio::test]
async fn check_connection_accepts_the_token_and_a_wrong_token_is_auth_failed() {
    let sim = start_sim().await;
    let good = connector(&sim.base_url(), TOKEN);
    assert_eq!(
        good.execute(&JobAction::CheckConnection).await,
        Ok(ActionOk {
            content_hash: None,
            test_counts: None
        })
    );

    let bad = connector(&sim.base_url(), "not-the-token");
    assert_eq!(
        bad.execute(&JobAction::CheckConnection).await,
        Err(ErrorClass::AuthFailed)
    );
    let rule_id = Uuid::now_v7();
    assert_eq!(
        bad.execute(&deploy(rule(rule_id, 1))).await,
        Err(ErrorClass::AuthFailed)
    );
    assert_eq!(
        bad.execute(&JobAction::DeleteRule {
            rule: rule_ref(rule_id)
        })
        .await,
        Err(ErrorClass::AuthFailed)
    );
    assert!(sim.saved_searches().is_empty());
}

#[tokio::test]
async fn siem_faults_map_to_error_classes() {
    let sim = start_sim().await;
    let connector = connector(&sim.base_url(), TOKEN);
    let rule_id = Uuid::now_v7();

    sim.set_fault(Some(Fault::Status(503)));
    assert_eq!(
        connector.execute(&deploy(rule(rule_id, 1))).await,
        Err(ErrorClass::SiemError)
    );
    assert_eq!(
        connector.execute(&JobAction::CheckConnection).await,
        Err(ErrorClass::SiemError)
    );

    sim.set_fault(Some(Fault::Status(429)));
    assert_eq!(
        connector.execute(&deploy(rule(rule_id, 1))).await,
        Err(ErrorClass::RateLimited)
    );

    sim.set_fault(Some(Fault::Status(403)));
    assert_eq!(
        connector
            .execute(&JobAction::DisableRule {
                rule: rule_ref(rule_id)
            })
            .await,
        Err(ErrorClass::Forbidden)
    );

    sim.set_fault(Some(Fault::DropConnection));
    assert_eq!(
        connector.execute(&deploy(rule(rule_id, 1))).await,
        Err(ErrorClass::SiemUnreachable)
    );

    sim.set_fault(None);
    assert!(connector.execute(&deploy(rule(rule_id, 1))).await.is_ok());
    assert_eq!(sim.saved_searches().len(), 1);
}

#[tokio::test]
async fn invalid_rule_fields_are_query_invalid() {
    let sim = start_sim().await;
    let connector = connector(&sim.base_url(), TOKEN);
    let mut spec = rule(Uuid::now_v7(), 1);
    spec.schedule.cron = "every five minutes".into();
    assert_eq!(
        connector.execute(&deploy(spec)).await,
        Err(ErrorClass::QueryInvalid)
    );
    assert!(sim.saved_searches().is_empty());
}

#[tokio::test]
async fn a_delay_beyond_the_clients_timeout_is_timeout() {
    let sim = start_sim().await;
    let connector = Connector::new(
        &target(&sim.base_url(), TOKEN),
        http(Duration::from_millis(300)),
    );
    sim.set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    assert_eq!(
        connector.execute(&deploy(rule(Uuid::now_v7(), 1))).await,
        Err(ErrorClass::Timeout)
    );
    assert_eq!(
        connector.execute(&JobAction::CheckConnection).await,
        Err(ErrorClass::Timeout)
    );
}

#[tokio::test]
async fn a_closed_port_is_siem_unreachable() {
    let connector = connector(&closed_port_url().await, TOKEN);
    assert_eq!(
        connector.execute(&deploy(rule(Uuid::now_v7(), 1))).await,
        Err(ErrorClass::SiemUnreachable)
    );
    assert_eq!(
        connector.execute(&JobAction::CheckConnection).await,
        Err(ErrorClass::SiemUnreachable)
    );
}

#[tokio::test]
async fn a_base_url_that_does_not_parse_is_malformed_job_without_io() {
    let connector = connector("splunk.corp:8089 (prod)", TOKEN);
    assert_eq!(
        connector.execute(&JobAction::CheckConnection).await,
        Err(ErrorClass::MalformedJob)
    );
    assert_eq!(
        connector.execute(&deploy(rule(Uuid::now_v7(), 1))).await,
        Err(ErrorClass::MalformedJob)
    );
}

#[tokio::test]
async fn owner_and_app_are_percent_encoded() {
    let sim = start_sim().await;
    let mut target = target(&sim.base_url(), TOKEN);
    if let SiemSettings::Splunk(settings) = &mut target.settings {
        settings.app = "sec ops/apps".into();
        settings.owner = "svc picket".into();
    }
    let connector = Connector::new(&target, http(Duration::from_secs(5)));
    let rule_id = Uuid::now_v7();
    connector
        .execute(&deploy(rule(rule_id, 1)))
        .await
        .expect("deploy");
    let stored = sim
        .saved_search(&managed_rule_name(&rule_id))
        .expect("created");
    assert_eq!(stored.app, "sec ops/apps");
    assert_eq!(stored.owner, "svc picket");
}

fn info(base_url: &str) -> ConnectionInfo {
    ConnectionInfo {
        connection_id: Uuid::now_v7(),
        name: "splunk-prod".into(),
        kind: SiemKind::Splunk,
        base_url: base_url.into(),
    }
}

#[tokio::test]
async fn probe_reports_reachable_with_latency_even_unauthenticated() {
    let sim = start_sim().await;
    let client = http(Duration::from_secs(5));
    let info = info(&sim.base_url());
    let health = siem::probe(&info, &client).await;
    assert_eq!(health.connection_id, info.connection_id);
    assert!(health.reachable);
    assert!(health.latency_ms.is_some_and(|ms| ms < 5_000), "{health:?}");
    assert_eq!(health.error_class, None);
    assert_eq!(sim.total_request_count(), 1);
    assert_eq!(
        sim.request_count(),
        0,
        "the probe never touches saved searches"
    );

    sim.set_fault(Some(Fault::Delay(Duration::from_millis(150))));
    let slow = siem::probe(&info, &client).await;
    assert!(slow.reachable);
    assert!(slow.latency_ms.is_some_and(|ms| ms >= 150), "{slow:?}");
}

#[tokio::test]
async fn probe_reports_unreachable_and_timeout() {
    let client = http(Duration::from_millis(300));
    let closed = info(&closed_port_url().await);
    let health = siem::probe(&closed, &client).await;
    assert!(!health.reachable);
    assert_eq!(health.latency_ms, None);
    assert_eq!(health.error_class, Some(ErrorClass::SiemUnreachable));

    let sim = start_sim().await;
    sim.set_fault(Some(Fault::Delay(Duration::from_secs(3))));
    let slow = siem::probe(&info(&sim.base_url()), &client).await;
    assert!(!slow.reachable);
    assert_eq!(slow.error_class, Some(ErrorClass::Timeout));
}

// ---- The rest of the connector interface: session keys, HEC, oneshot, health ----

const HEC_TOKEN: &str = "hec-token-0123";
const TEST_INDEX: &str = "picket_test_idx";

async fn full_sim() -> SplunkSimHandle {
    SplunkSim::builder()
        .token(TOKEN)
        .user("picket-svc", "s3cret-pass")
        .hec_token(HEC_TOKEN)
        .start()
        .await
        .expect("start the simulator")
}

fn full_connector(sim: &SplunkSimHandle, login: Option<(&str, &str)>) -> Connector {
    let mut t = target(&sim.base_url(), TOKEN);
    if let SiemSettings::Splunk(s) = &mut t.settings {
        s.login = login.map(|(u, p)| picket_proto::SplunkLogin {
            username: u.into(),
            password: Credential::new(p.into()),
        });
        s.hec = Some(picket_proto::SplunkHec {
            url: sim.base_url(),
            token: Credential::new(HEC_TOKEN.into()),
            test_index: TEST_INDEX.into(),
        });
    }
    Connector::new(&t, http(Duration::from_secs(10)))
}

#[tokio::test]
async fn session_key_auth_logs_in_and_logs_in_again_when_the_session_expires() {
    let sim = full_sim().await;
    let c = full_connector(&sim, Some(("picket-svc", "s3cret-pass")));
    let id = Uuid::now_v7();
    c.deploy(&rule(id, 1))
        .await
        .expect("deploy with a session key");
    sim.expire_sessions();
    c.set_enabled(&id, false)
        .await
        .expect("re-login after the session expired");
    assert_eq!(
        sim.saved_search(&managed_rule_name(&id)).unwrap().content["disabled"],
        "1"
    );
    let wrong = full_connector(&sim, Some(("picket-svc", "wrong")));
    assert_eq!(wrong.check_connection().await, Err(ErrorClass::AuthFailed));
}

#[tokio::test]
async fn enable_hash_drift_and_listing_cover_only_managed_searches() {
    let sim = full_sim().await;
    let c = full_connector(&sim, None);
    let id = Uuid::now_v7();
    let hash = c.deploy(&rule(id, 1)).await.expect("deploy");
    assert_eq!(
        c.content_hash(&id).await,
        Ok(hash),
        "read back equals deployed"
    );
    c.set_enabled(&id, false).await.expect("disable");
    assert_ne!(
        c.content_hash(&id).await,
        Ok(hash),
        "disabled in Splunk = drift"
    );
    c.set_enabled(&id, true).await.expect("enable");
    assert_eq!(c.content_hash(&id).await, Ok(hash));
    let name = managed_rule_name(&id);
    let mut edited = sim.saved_search(&name).unwrap();
    edited
        .content
        .insert("search".into(), "index=* | head 1".into());
    sim.insert_saved_search(edited);
    assert_ne!(
        c.content_hash(&id).await,
        Ok(hash),
        "an edited search = drift"
    );
    sim.insert_saved_search(SavedSearch {
        name: "customer search".into(),
        app: "search".into(),
        owner: "nobody".into(),
        content: BTreeMap::from([("search".into(), "index=main".into())]),
    });
    let mut ids = vec![id];
    for _ in 0..120 {
        let more = Uuid::now_v7();
        c.deploy(&rule(more, 1)).await.expect("deploy");
        ids.push(more);
    }
    let mut listed = c.list_managed().await.expect("list over two pages");
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids);
}

fn test_event(secs_ago: i64, user: &str) -> siem::TestEvent {
    siem::TestEvent {
        time: time::OffsetDateTime::now_utc().unix_timestamp() - secs_ago,
        fields: BTreeMap::from([
            ("EventCode".into(), "4625".into()),
            ("user".into(), user.into()),
        ]),
    }
}

#[tokio::test]
async fn hec_test_events_are_counted_by_oneshot_within_the_window() {
    let sim = full_sim().await;
    let c = full_connector(&sim, None);
    let sent = c
        .inject_test_events(&[
            test_event(30, "alice"),
            test_event(20, "alice"),
            test_event(10, "bob"),
        ])
        .await
        .expect("HEC");
    assert_eq!(sent, 3);
    let events = sim.events();
    assert!(
        events
            .iter()
            .all(|e| e.fields["source"] == "picket_test" && e.fields["index"] == TEST_INDEX)
    );
    // A real event in the same index is not a test event.
    let mut real = test_event(5, "alice");
    real.fields.insert("index".into(), TEST_INDEX.into());
    sim.insert_events(vec![picket_siem_sim::splunk::StoredEvent {
        time: real.time,
        fields: real.fields,
    }]);
    let window = siem::TimeWindow::last(3600);
    assert_eq!(
        c.count_test_matches("EventCode=4625 user=alice", window)
            .await,
        Ok(2)
    );
    assert_eq!(c.count_test_matches("user=carol", window).await, Ok(0));
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let earlier = siem::TimeWindow {
        from: now - 7200,
        to: now - 3600,
    };
    assert_eq!(c.count_test_matches("user=alice", earlier).await, Ok(0));
    assert_eq!(
        c.count_test_matches("| bogus", window).await,
        Err(ErrorClass::QueryInvalid)
    );

    // Splunk's 200-with-error is an error.
    sim.set_search_error(true);
    assert_eq!(
        c.count_test_matches("user=alice", window).await,
        Err(ErrorClass::SiemError)
    );
    sim.set_search_error(false);

    // A wrong HEC token is auth_failed.
    let mut t = target(&sim.base_url(), TOKEN);
    if let SiemSettings::Splunk(s) = &mut t.settings {
        s.hec = Some(picket_proto::SplunkHec {
            url: sim.base_url(),
            token: Credential::new("wrong".into()),
            test_index: TEST_INDEX.into(),
        });
    }
    let wrong = Connector::new(&t, http(Duration::from_secs(5)));
    assert_eq!(
        wrong.inject_test_events(&[test_event(1, "x")]).await,
        Err(ErrorClass::AuthFailed)
    );
    // Without HEC settings there is nowhere to send test events.
    assert_eq!(
        connector(&sim.base_url(), TOKEN)
            .inject_test_events(&[test_event(1, "x")])
            .await,
        Err(ErrorClass::MalformedJob)
    );
}

#[tokio::test]
async fn health_reduces_scheduler_records_to_counts() {
    use picket_siem_sim::splunk::ScriptedRun;
    let sim = full_sim().await;
    let c = full_connector(&sim, None);
    let id = Uuid::now_v7();
    c.deploy(&rule(id, 1)).await.expect("deploy");
    let mut last = ScriptedRun::success(60, 5, 1);
    last.duration_ms = 2340;
    sim.script_runs(
        &managed_rule_name(&id),
        vec![
            ScriptedRun::success(900, 0, 0),
            ScriptedRun::skipped(600),
            ScriptedRun::failure(300),
            last,
        ],
    );
    let h = c
        .rule_health(&id, siem::TimeWindow::last(24 * 3600))
        .await
        .expect("health");
    assert_eq!((h.runs_succeeded, h.runs_skipped, h.runs_failed), (2, 1, 1));
    assert_eq!((h.results_total, h.alerts_fired), (Some(5), Some(1)));
    assert_eq!(h.last_run_duration_ms, Some(2340));
    assert!(h.last_run_at.is_some());
}
