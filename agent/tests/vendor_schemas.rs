//! The request bodies the Sentinel and Elastic connectors send, checked
//! against the vendors' own schemas read in place from `../shared/specs/`:
//! the `alertRules` swagger (`2024-09-01`) and the Kibana detection engine
//! OpenAPI bundle (`2023-10-31`). Bodies are taken from what the simulators
//! received, so they are exactly what went over the wire. Each schema is
//! also shown to refuse bodies the real service would refuse, so the check
//! is not vacuous.
//!
//! Where the swagger points at files the specs folder does not hold
//! (`./common/AlertTypes.json`), the referenced definitions are stubbed:
//! `AlertSeverityEnum` with Microsoft's documented values, anything else
//! unconstrained. `readOnly` properties are left out of the allowed set: a
//! client that sends them back is wrong.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use picket_agent::siem::Connector;
use picket_proto::{
    Credential, ElasticSettings, RuleSpec, Schedule, SentinelSettings, Severity, SiemSettings,
    SiemTarget,
};
use picket_siem_sim::elastic::ElasticSim;
use picket_siem_sim::sentinel::SentinelSim;
use serde_json::{Map, Value, json};
use uuid::Uuid;

fn specs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/specs")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Rewrites `$ref`s the swagger makes to other files: the common types file
/// is inlined, the missing AlertTypes definitions stubbed.
fn resolve_refs(value: &mut Value, common: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref").cloned() {
                if r.starts_with("#/definitions/") {
                    return;
                }
                let replacement = if r.ends_with("AlertTypes.json#/definitions/AlertSeverityEnum") {
                    json!({"type": "string", "enum": ["High", "Medium", "Low", "Informational"]})
                } else if let Some(name) =
                    r.strip_prefix("../../../common/2.0/types.json#/definitions/")
                {
                    let mut def = common["definitions"][name].clone();
                    resolve_refs(&mut def, common);
                    def
                } else {
                    json!({})
                };
                map.remove("$ref");
                if let Value::Object(rep) = replacement {
                    for (k, v) in rep {
                        map.entry(k).or_insert(v);
                    }
                }
                return;
            }
            for v in map.values_mut() {
                resolve_refs(v, common);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| resolve_refs(v, common)),
        _ => {}
    }
}

/// A strict schema of a `Scheduled` alert rule PUT body, from the swagger.
fn sentinel_schema() -> Value {
    let mut doc = read_json(specs().join("sentinel/AlertRules.json"));
    let common = read_json(specs().join("sentinel/common/2.0/types.json"));
    resolve_refs(&mut doc, &common);
    let defs = doc["definitions"].clone();
    let mut allowed = Map::new();
    for source in [
        "ScheduledAlertRuleCommonProperties",
        "ScheduledAlertRuleProperties",
    ] {
        for (k, v) in defs[source]["properties"].as_object().unwrap() {
            if v["readOnly"] != json!(true) {
                allowed.insert(k.clone(), v.clone());
            }
        }
    }
    let required = defs["ScheduledAlertRuleProperties"]["required"].clone();
    assert!(
        required.as_array().is_some_and(|r| r.len() >= 10),
        "the swagger lists the required properties"
    );
    let kinds = defs["AlertRuleKindEnum"]["enum"].clone();
    assert!(kinds.as_array().unwrap().contains(&json!("Scheduled")));
    json!({
        "definitions": defs,
        "type": "object",
        "required": ["kind", "properties"],
        "additionalProperties": false,
        "properties": {
            "kind": { "enum": kinds },
            "etag": { "type": "string" },
            "properties": {
                "type": "object",
                "required": required,
                "additionalProperties": false,
                "properties": allowed,
            },
        },
    })
}

/// A schema pointing at `#/components/schemas/{name}` of the Kibana bundle.
fn kibana_schema(name: &str) -> Value {
    let path =
        specs().join("elastic/security_solution_detections_api_2023_10_31.bundled.schema.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_norway::from_str(&text).unwrap();
    assert!(
        doc["components"]["schemas"][name].is_object(),
        "{name} is in the bundle"
    );
    json!({ "$ref": format!("#/components/schemas/{name}"), "components": doc["components"] })
}

fn errors(schema: &Value, body: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).unwrap();
    validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn rule(query: &str, severity: Severity) -> RuleSpec {
    RuleSpec {
        rule_id: Uuid::now_v7(),
        version: 1,
        title: "Brute force against one account".into(),
        description: "Failed logons.".into(),
        severity,
        query: query.into(),
        schedule: Schedule {
            cron: "*/5 * * * *".into(),
            earliest: "-10m".into(),
            latest: "now".into(),
        },
    }
}

#[tokio::test]
async fn sentinel_bodies_match_the_alert_rules_swagger() {
    let sim = SentinelSim::builder()
        .client("c", "s")
        .start()
        .await
        .unwrap();
    let base = sim.base_url();
    let target = SiemTarget {
        connection_id: Uuid::now_v7(),
        name: "s".into(),
        settings: SiemSettings::Sentinel(SentinelSettings {
            subscription_id: "sub".into(),
            resource_group: "rg".into(),
            workspace_name: "ws".into(),
            workspace_id: "wid".into(),
            tenant_id: "tid".into(),
            client_id: "c".into(),
            client_secret: Credential::new("s".into()),
            management_url: base.clone(),
            login_url: base.clone(),
            log_analytics_url: base,
            ingestion: None,
        }),
    };
    let c = Connector::new(&target, http());
    for severity in [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ] {
        let r = rule("SecurityEvent | where EventID == 4625", severity);
        c.deploy(&r).await.unwrap();
        c.deploy(&r).await.unwrap();
        c.set_enabled(&r.rule_id, false).await.unwrap();
    }
    let schema = sentinel_schema();
    let bodies = sim.received_bodies();
    assert_eq!(
        bodies.len(),
        15,
        "create, update with etag, disable: per severity"
    );
    for body in &bodies {
        assert_eq!(errors(&schema, body), Vec::<String>::new(), "{body}");
    }
    // Monitoring mode (incident creation off) is a valid body too.
    let r = rule("SecurityEvent | where EventID == 4625", Severity::High);
    c.deploy_mode(&r, true).await.unwrap();
    let body = sim.received_bodies().pop().unwrap();
    assert_eq!(
        body["properties"]["incidentConfiguration"]["createIncident"],
        false
    );
    assert_eq!(errors(&schema, &body), Vec::<String>::new(), "{body}");

    // The schema refuses what ARM would refuse.
    let good = bodies[0].clone();
    let mut bad = Vec::new();
    let mut b = good.clone();
    b["properties"]["severity"] = json!("Critical");
    bad.push(b);
    let mut b = good.clone();
    b["properties"]
        .as_object_mut()
        .unwrap()
        .remove("queryFrequency");
    bad.push(b);
    let mut b = good.clone();
    b["properties"]["triggerOperator"] = json!("GreaterThanOrEqual");
    bad.push(b);
    let mut b = good.clone();
    b["properties"]["lastModifiedUtc"] = json!("2026-01-01T00:00:00Z");
    bad.push(b);
    let mut b = good.clone();
    b["properties"]["triggerThreshold"] = json!("0");
    bad.push(b);
    let mut b = good;
    b["kind"] = json!("Sheduled");
    bad.push(b);
    for b in bad {
        assert!(
            !errors(&schema, &b).is_empty(),
            "the schema must refuse {b}"
        );
    }
}

#[tokio::test]
async fn elastic_bodies_match_the_detection_engine_openapi() {
    let sim = ElasticSim::builder().api_key("k").start().await.unwrap();
    let target = SiemTarget {
        connection_id: Uuid::now_v7(),
        name: "e".into(),
        settings: SiemSettings::Elastic(ElasticSettings {
            kibana_url: sim.base_url(),
            elasticsearch_url: sim.base_url(),
            space: None,
            api_key: Credential::new("k".into()),
            test_index: "picket-test".into(),
        }),
    };
    let c = Connector::new(&target, http());
    let queries = [
        "event.code:4625 and user.name:*",
        "process where process.name == \"mimikatz.exe\"",
        "FROM logs-* | WHERE event.code == \"4625\" | LIMIT 10",
    ];
    for (q, severity) in queries
        .iter()
        .zip([Severity::Info, Severity::Medium, Severity::Critical])
    {
        let r = rule(q, severity);
        c.deploy(&r).await.unwrap();
        c.deploy(&r).await.unwrap();
    }
    let create = kibana_schema("RuleCreateProps");
    let update = kibana_schema("RuleUpdateProps");
    let bodies = sim.received_bodies();
    assert_eq!(bodies.len(), 9, "create, create (409), update per rule");
    for (op, body) in &bodies {
        let schema = if op == "update" { &update } else { &create };
        assert_eq!(errors(schema, body), Vec::<String>::new(), "{op}: {body}");
    }
    let types: Vec<&str> = bodies
        .iter()
        .filter_map(|(_, b)| b["type"].as_str())
        .collect();
    assert!(types.contains(&"query") && types.contains(&"eql") && types.contains(&"esql"));
    // Monitoring mode (a building block without actions), created and updated.
    let r = rule(queries[0], Severity::High);
    c.deploy_mode(&r, true).await.unwrap();
    c.deploy_mode(&r, true).await.unwrap();
    let monitored = sim.received_bodies().split_off(bodies.len());
    assert_eq!(monitored.len(), 3, "create, create (409), update");
    for (op, body) in &monitored {
        assert_eq!(body["building_block_type"], "default", "{op}: {body}");
        let schema = if op == "update" { &update } else { &create };
        assert_eq!(errors(schema, body), Vec::<String>::new(), "{op}: {body}");
    }

    // The schema refuses what Kibana would refuse.
    let good = bodies[0].1.clone();
    let mut bad = Vec::new();
    let mut b = good.clone();
    b["severity"] = json!("severe");
    bad.push(b);
    let mut b = good.clone();
    b["risk_score"] = json!(101);
    bad.push(b);
    let mut b = good.clone();
    b.as_object_mut().unwrap().remove("name");
    bad.push(b);
    let mut b = good;
    b["type"] = json!("eql");
    b["language"] = json!("kuery");
    bad.push(b);
    for b in bad {
        assert!(
            !errors(&create, &b).is_empty(),
            "the schema must refuse {b}"
        );
    }
}
