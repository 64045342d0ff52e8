//! Rules through the real server: validation on every save (422 with each
//! finding's line and column; warnings kept with the version), rules for
//! each SIEM with their native schedules, diffs between versions, and rules
//! as files (export, import, round trip, hostile files).

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::app;

fn codes(details: &Value) -> Vec<String> {
    details
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d["code"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn send_toml(
    s: &support::TestApp,
    token: &str,
    body: impl Into<reqwest::Body>,
) -> support::Answer {
    let resp = s
        .http
        .post(s.url("/v1/rules/import"))
        .bearer_auth(token)
        .header("content-type", "application/toml")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    support::Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

#[tokio::test]
async fn invalid_rules_are_refused_with_every_finding_and_its_position() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;

    // A refused command on line 2, column 3.
    let mut body = support::rule_body("Deletes");
    body["query"] = json!("index=main sourcetype=auth\n| delete");
    let a = s.post("/v1/rules", Some(&admin), body).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "invalid_rule");
    let d = &a.body["error"]["details"][0];
    assert_eq!(d["field"], "query");
    assert_eq!(d["code"], "refused_command");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(2), Some(3)),
        "{d}"
    );
    assert!(d["message"].as_str().unwrap().contains("delete"), "{d}");

    // Several findings at once: a quote never closed, a bad ATT&CK tag, a bad cron.
    let mut body = support::rule_body("Broken");
    body["query"] = json!("index=main user=\"alice");
    body["mitre"] = json!(["T1059.001", "attack.t1059"]);
    body["cron"] = json!("*/5 * * *");
    let a = s.post("/v1/rules", Some(&admin), body).await;
    assert_eq!(a.status, 422, "{}", a.text);
    let details = &a.body["error"]["details"];
    assert_eq!(
        codes(details),
        ["unbalanced_quote", "invalid_schedule", "invalid_mitre_tag"],
        "{details}"
    );
    assert_eq!(details[0]["line"], 1);
    assert_eq!(details[0]["column"], 17);
    assert!(
        details[2]["message"].as_str().unwrap().contains("tag 2"),
        "{details}"
    );

    // Sentinel: KQL control commands are refused, and Sentinel's schedule bounds apply.
    let a = s
        .post(
            "/v1/rules",
            Some(&admin),
            json!({ "title": "Drop", "siem_kind": "sentinel", "severity": "low",
                    "query": "SecurityEvent\n| where EventID == 1;\n.drop table SecurityEvent",
                    "frequency": "PT1M", "lookback": "PT1H" }),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    let details = &a.body["error"]["details"];
    assert!(
        codes(details).contains(&"refused_command".to_owned()),
        "{details}"
    );
    let a = s
        .post(
            "/v1/rules",
            Some(&admin),
            json!({ "title": "Too often", "siem_kind": "sentinel", "severity": "low",
                    "query": "SecurityEvent | where EventID == 4625",
                    "frequency": "PT1M", "lookback": "PT1H" }),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(a.text.contains("PT5M to P14D"), "{}", a.text);
    // An ISO 8601 duration that is not one.
    let a = s
        .post(
            "/v1/rules",
            Some(&admin),
            json!({ "title": "Bad duration", "siem_kind": "sentinel", "severity": "low",
                    "query": "SecurityEvent", "frequency": "5 minutes", "lookback": "PT1H" }),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.body["error"]["details"][0]["field"], "frequency");

    // Elastic: the language must agree with the query's form.
    let a = s
        .post(
            "/v1/rules",
            Some(&admin),
            json!({ "title": "Mismatch", "siem_kind": "elastic", "language": "esql", "severity": "low",
                    "query": "process where process.name == \"cmd.exe\"", "cron": "*/5 * * * *" }),
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(codes(&a.body["error"]["details"]), ["language_mismatch"]);

    // Nothing was saved.
    let a = s.get("/v1/rules", &admin).await;
    assert_eq!(a.body.as_array().map(Vec::len), Some(0), "{}", a.text);
}

#[tokio::test]
async fn warnings_are_kept_with_the_saved_version() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let mut body = support::rule_body("Costly");
    body["query"] = json!("index=* user=*admin | stats count by host");
    body["earliest"] = json!("0");
    let a = s.post("/v1/rules", Some(&admin), body).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let v = &a.body["versions"][0];
    assert_eq!(
        codes(&v["warnings"]),
        ["all_indexes", "leading_wildcard", "all_time_window"],
        "{v}"
    );
    assert_eq!(v["warnings"][0]["column"], 1);
    // And still there when read back.
    let id = a.body["id"].as_str().unwrap();
    let a = s.get(&format!("/v1/rules/{id}"), &admin).await;
    assert_eq!(codes(&a.body["versions"][0]["warnings"]).len(), 3);
}

#[tokio::test]
async fn rules_for_each_siem_keep_kind_language_tags_and_schedule() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let a = s
        .post(
            "/v1/rules",
            Some(&admin),
            json!({ "title": "Failed logons", "siem_kind": "sentinel", "severity": "medium",
                    "query": "SecurityEvent\n| where EventID == 4625\n| summarize n = count() by Account",
                    "frequency": "PT5M", "lookback": "PT1H", "mitre": ["T1110", "T1110.001"] }),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["siem_kind"], "sentinel");
    let v = &a.body["versions"][0];
    assert_eq!(v["language"], "kql");
    assert_eq!(v["cron"], "*/5 * * * *");
    assert_eq!(v["earliest"], "-1h");
    assert_eq!(v["latest"], "now");
    assert_eq!(v["mitre"], json!(["T1110", "T1110.001"]));
    let id = a.body["id"].as_str().unwrap().to_owned();

    // A new version cannot move the rule to another SIEM.
    let a = s
        .post(
            &format!("/v1/rules/{id}/versions"),
            Some(&admin),
            json!({ "title": "x", "siem_kind": "splunk", "severity": "low", "query": "index=main", "cron": "*/5 * * * *" }),
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "siem_mismatch");

    let a = s
        .post(
            "/v1/rules",
            Some(&admin),
            json!({ "title": "cmd spawns", "siem_kind": "elastic", "language": "eql", "severity": "high",
                    "query": "process where process.name == \"cmd.exe\" | head 10",
                    "frequency": "10m", "lookback": "now-15m" }),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let v = &a.body["versions"][0];
    assert_eq!(
        (
            v["language"].as_str(),
            v["cron"].as_str(),
            v["earliest"].as_str()
        ),
        (Some("eql"), Some("*/10 * * * *"), Some("-15m"))
    );
}

#[tokio::test]
async fn any_two_versions_can_be_diffed() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let mut body = support::rule_body("Brute force");
    body["query"] = json!("index=main sourcetype=auth\n| stats count by user\n| where count > 5");
    let a = s.post("/v1/rules", Some(&admin), body.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();
    body["query"] = json!(
        "index=main sourcetype=auth action=failure\n| stats count by user\n| where count > 10"
    );
    body["severity"] = json!("critical");
    body["mitre"] = json!(["T1110"]);
    let a = s
        .post(
            &format!("/v1/rules/{id}/versions"),
            Some(&admin),
            body.clone(),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["version"], 2);
    body["title"] = json!("Brute force (renamed)");
    let a = s
        .post(&format!("/v1/rules/{id}/versions"), Some(&admin), body)
        .await;
    assert_eq!(a.body["version"], 3);

    let a = s
        .get(&format!("/v1/rules/{id}/diff?from=1&to=2"), &admin)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let lines: Vec<(String, String)> = a.body["query"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["op"].as_str().unwrap().to_owned(),
                l["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("delete", "index=main sourcetype=auth"),
        ("delete", "| where count > 5"),
        ("insert", "index=main sourcetype=auth action=failure"),
        ("equal", "| stats count by user"),
        ("insert", "| where count > 10"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    let mut got = lines.clone();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted, "{lines:?}");
    let fields: Vec<&str> = a.body["metadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["severity", "mitre"]);
    assert_eq!(a.body["metadata"][0]["from"], "high");
    assert_eq!(a.body["metadata"][0]["to"], "critical");
    assert!(
        a.body["unified"]
            .as_str()
            .unwrap()
            .contains("+index=main sourcetype=auth action=failure")
    );

    // Any two, either way round; the default is the latest against the one before.
    let a = s
        .get(&format!("/v1/rules/{id}/diff?from=3&to=1"), &admin)
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["metadata"].as_array().unwrap().len(),
        3,
        "{}",
        a.text
    );
    let a = s.get(&format!("/v1/rules/{id}/diff"), &admin).await;
    assert_eq!(
        (a.body["from"].as_i64(), a.body["to"].as_i64()),
        (Some(2), Some(3))
    );
    assert!(
        a.body["query"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["op"] == "equal")
    );
    let a = s
        .get(&format!("/v1/rules/{id}/diff?from=1&to=9"), &admin)
        .await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn rules_round_trip_as_files_and_hostile_files_are_refused() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let mut body = support::rule_body("Brute force");
    body["query"] = json!("EventCode=4625 user=alice");
    body["mitre"] = json!(["T1110.001"]);
    body["tests"] = json!([
        { "name": "alice fails", "expect": "match", "events": [{ "EventCode": "4625", "user": "alice" }] },
        { "name": "bob fails", "expect": "no_match", "events": [{ "EventCode": "4625", "user": "bob" }] }
    ]);
    let a = s.post("/v1/rules", Some(&admin), body).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();

    let a = s.get(&format!("/v1/rules/{id}/export"), &admin).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/toml")
    );
    let file = a.text.clone();
    assert!(file.contains(&format!("id = \"{id}\"")), "{file}");
    assert!(file.contains("[[tests]]"), "{file}");

    // Re-importing the same file changes nothing.
    let a = send_toml(&s, &admin, file.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["outcome"], "unchanged");
    assert_eq!(a.body["version"]["version"], 1);

    // An edited file adds a version, with everything carried over.
    let edited = file.replace("user=alice", "user=alice action=failure");
    let a = send_toml(&s, &admin, edited.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["outcome"], "new_version");
    assert_eq!(a.body["version"]["version"], 2);
    assert_eq!(
        a.body["version"]["query"],
        "EventCode=4625 user=alice action=failure"
    );
    assert_eq!(a.body["version"]["tests"].as_array().unwrap().len(), 2);
    assert_eq!(a.body["version"]["mitre"], json!(["T1110.001"]));
    // Exporting version 2 gives back exactly the imported file.
    let a = s
        .get(&format!("/v1/rules/{id}/export?version=2"), &admin)
        .await;
    assert_eq!(a.text, edited);

    // Without an id it is a new rule.
    let no_id: String = file
        .lines()
        .filter(|l| !l.starts_with("id = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let a = send_toml(&s, &admin, no_id.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["outcome"], "created");
    assert_ne!(a.body["rule_id"], json!(id));

    // Hostile or broken files: each refused with a precise answer.
    let a = send_toml(&s, &admin, vec![b'#'; 300 * 1024]).await;
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (400, Some("body_too_large")),
        "{}",
        a.text
    );
    let a = send_toml(&s, &admin, vec![0xff, 0xfe, 0x00]).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("UTF-8"), "{}", a.text);
    let a = send_toml(&s, &admin, no_id.replace("severity", "sevrity")).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("unknown field"), "{}", a.text);
    assert!(a.text.contains("line "), "{}", a.text);
    let a = send_toml(&s, &admin, "format = 1\nname = \"x").await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("line 2"), "{}", a.text);
    let a = send_toml(
        &s,
        &admin,
        no_id.replace(
            "EventCode=4625 user=alice",
            "EventCode=4625 | collect index=x",
        ),
    )
    .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(codes(&a.body["error"]["details"]), ["refused_command"]);
    let a = send_toml(&s, &admin, no_id.replace("format = 1", "format = 2")).await;
    assert_eq!(a.status, 422, "{}", a.text);
    let a = send_toml(
        &s,
        &admin,
        file.replace(&id, "0190aaaa-0000-7000-8000-000000000000"),
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let many_tests: String = (0..60)
        .map(|i| {
            format!(
                "\n[[tests]]\nname = \"t{i}\"\nexpect = \"match\"\nevents = [{{ a = \"b\" }}]\n"
            )
        })
        .collect();
    let a = send_toml(&s, &admin, format!("{no_id}{many_tests}")).await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(a.text.contains("too_many_tests"), "{}", a.text);
}
