//! The Splunk simulator over real HTTP: authentication, the saved-search
//! lifecycle, paging, argument checks and fault injection.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use picket_siem_sim::splunk::{Fault, SavedSearch, SplunkSim, SplunkSimHandle};
use reqwest::{Client, StatusCode};
use serde_json::Value;

const TOKEN: &str = "sim-test-token";
const COLLECTION: &str = "/servicesNS/nobody/search/saved/searches";

async fn start() -> SplunkSimHandle {
    SplunkSim::builder()
        .token(TOKEN)
        .user("admin", "changeme")
        .start()
        .await
        .expect("start the simulator")
}

fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build a client")
}

fn url(sim: &SplunkSimHandle, path: &str) -> String {
    format!("{}{path}", sim.base_url())
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn message_text(body: &Value) -> String {
    body["messages"][0]["text"]
        .as_str()
        .expect("a messages[0].text")
        .to_owned()
}

async fn create(sim: &SplunkSimHandle, http: &Client, form: &[(&str, &str)]) -> reqwest::Response {
    http.post(url(sim, COLLECTION))
        .bearer_auth(TOKEN)
        .query(&[("output_mode", "json")])
        .form(form)
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn bearer_token_and_session_key_authenticate_anything_else_is_401() {
    let sim = start().await;
    let http = client();
    let info = url(&sim, "/services/server/info?output_mode=json");

    let ok = http
        .get(&info)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    let body = json(ok).await;
    assert_eq!(body["entry"][0]["content"]["version"], "9.2.1");
    assert_eq!(body["entry"][0]["content"]["serverName"], "picket-sim");
    assert_eq!(body["generator"]["version"], "9.2.1");

    for request in [
        http.get(&info),
        http.get(&info).bearer_auth("wrong-token"),
        http.get(&info)
            .header("Authorization", "Splunk not-a-session"),
        http.get(&info).basic_auth("admin", Some("changeme")),
    ] {
        let denied = request.send().await.expect("send");
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        let body = json(denied).await;
        assert_eq!(body["messages"][0]["type"], "WARN");
        assert_eq!(message_text(&body), "call not properly authenticated");
    }

    let login = url(&sim, "/services/auth/login?output_mode=json");
    let bad = http
        .post(&login)
        .form(&[("username", "admin"), ("password", "nope")])
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    let good = http
        .post(&login)
        .form(&[("username", "admin"), ("password", "changeme")])
        .send()
        .await
        .expect("send");
    assert_eq!(good.status(), StatusCode::OK);
    let key = json(good).await["sessionKey"]
        .as_str()
        .expect("a sessionKey")
        .to_owned();
    let with_session = http
        .get(&info)
        .header("Authorization", format!("Splunk {key}"))
        .send()
        .await
        .expect("send");
    assert_eq!(with_session.status(), StatusCode::OK);

    // Login without output_mode answers Splunk's XML.
    let xml = http
        .post(url(&sim, "/services/auth/login"))
        .form(&[("username", "admin"), ("password", "changeme")])
        .send()
        .await
        .expect("send");
    assert_eq!(xml.status(), StatusCode::OK);
    assert!(xml.text().await.expect("body").contains("<sessionKey>"));

    // server/info is not a saved-search endpoint.
    assert_eq!(sim.request_count(), 0);
    assert!(sim.total_request_count() >= 8);
}

#[tokio::test]
async fn saved_search_lifecycle_create_conflict_get_update_disable_delete() {
    let sim = start().await;
    let http = client();
    let form = [
        ("name", "picket-rule one"),
        ("search", "index=main EventCode=4625 | stats count by user"),
        ("cron_schedule", "*/5 * * * *"),
        ("is_scheduled", "1"),
        ("disabled", "0"),
        ("dispatch.earliest_time", "-5m"),
        ("dispatch.latest_time", "now"),
        ("alert_type", "number of events"),
        ("alert_comparator", "greater than"),
        ("alert_threshold", "0"),
        ("alert.severity", "4"),
        ("alert.track", "1"),
        ("actions", ""),
    ];
    let created = create(&sim, &http, &form).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let body = json(created).await;
    let entry = &body["entry"][0];
    assert_eq!(entry["name"], "picket-rule one");
    assert_eq!(
        entry["id"],
        format!(
            "{}/servicesNS/nobody/search/saved/searches/picket-rule%20one",
            sim.base_url()
        )
    );
    assert_eq!(entry["acl"]["app"], "search");
    assert_eq!(entry["acl"]["owner"], "nobody");
    assert_eq!(entry["acl"]["sharing"], "app");
    assert_eq!(entry["author"], "nobody");
    assert_eq!(entry["content"]["is_scheduled"], Value::Bool(true));
    assert_eq!(entry["content"]["disabled"], Value::Bool(false));
    assert_eq!(entry["content"]["cron_schedule"], "*/5 * * * *");
    assert_eq!(entry["content"]["alert.severity"], "4");
    assert_eq!(body["paging"]["total"], 1);

    let stored = sim.saved_search("picket-rule one").expect("stored");
    assert_eq!(stored.app, "search");
    assert_eq!(stored.owner, "nobody");
    assert_eq!(stored.content["search"], form[1].1);
    assert_eq!(stored.content["is_scheduled"], "1");
    assert!(!stored.content.contains_key("name"));

    let again = create(&sim, &http, &form).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let text = message_text(&json(again).await);
    assert!(
        text.contains("An object with name=picket-rule one already exists"),
        "{text}"
    );
    assert_eq!(sim.saved_searches().len(), 1);

    let item = url(&sim, &format!("{COLLECTION}/picket-rule%20one"));
    let got = http
        .get(&item)
        .bearer_auth(TOKEN)
        .query(&[("output_mode", "json")])
        .send()
        .await
        .expect("send");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        json(got).await["entry"][0]["content"]["dispatch.earliest_time"],
        "-5m"
    );

    // Any owner in the path sees an app-shared object.
    let as_admin = http
        .get(url(
            &sim,
            "/servicesNS/admin/search/saved/searches/picket-rule%20one",
        ))
        .bearer_auth(TOKEN)
        .query(&[("output_mode", "json")])
        .send()
        .await
        .expect("send");
    assert_eq!(as_admin.status(), StatusCode::OK);

    let post = |form: Vec<(&'static str, &'static str)>| {
        http.post(&item)
            .bearer_auth(TOKEN)
            .query(&[("output_mode", "json")])
            .form(&form)
            .send()
    };
    let renamed = post(vec![("name", "other")]).await.expect("send");
    assert_eq!(renamed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        message_text(&json(renamed).await),
        "Argument \"name\" is not supported by this handler."
    );

    let updated = post(vec![
        ("description", "Failed logons"),
        ("dispatch.earliest_time", "-15m"),
    ])
    .await
    .expect("send");
    assert_eq!(updated.status(), StatusCode::OK);
    let stored = sim.saved_search("picket-rule one").expect("stored");
    assert_eq!(stored.content["description"], "Failed logons");
    assert_eq!(stored.content["dispatch.earliest_time"], "-15m");
    assert_eq!(stored.content["cron_schedule"], "*/5 * * * *");

    let disabled = post(vec![("disabled", "1")]).await.expect("send");
    assert_eq!(disabled.status(), StatusCode::OK);
    assert_eq!(
        json(disabled).await["entry"][0]["content"]["disabled"],
        Value::Bool(true)
    );
    assert_eq!(
        sim.saved_search("picket-rule one").expect("stored").content["disabled"],
        "1"
    );

    let deleted = http
        .delete(&item)
        .bearer_auth(TOKEN)
        .query(&[("output_mode", "json")])
        .send()
        .await
        .expect("send");
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(sim.saved_searches().is_empty());

    for request in [
        http.get(&item),
        http.delete(&item),
        http.post(&item).form(&[("disabled", "1")]),
    ] {
        let missing = request
            .bearer_auth(TOKEN)
            .query(&[("output_mode", "json")])
            .send()
            .await
            .expect("send");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let text = message_text(&json(missing).await);
        assert!(
            text.contains("Could not find object id=picket-rule one"),
            "{text}"
        );
    }
    assert_eq!(sim.request_count(), 11);
}

#[tokio::test]
async fn listing_pages_with_count_and_offset() {
    let sim = start().await;
    let http = client();
    for name in ["picket-e", "picket-c", "picket-a", "picket-d", "picket-b"] {
        let created = create(&sim, &http, &[("name", name), ("search", "index=main")]).await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    sim.insert_saved_search(SavedSearch {
        name: "customer search".into(),
        app: "other_app".into(),
        owner: "alice".into(),
        content: [("search".to_owned(), "index=x".to_owned())].into(),
    });
    let list = |path: &'static str, query: Vec<(&'static str, &'static str)>| {
        let http = http.clone();
        let url = url(&sim, path);
        async move {
            let response = http
                .get(url)
                .bearer_auth(TOKEN)
                .query(&[("output_mode", "json")])
                .query(&query)
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), StatusCode::OK);
            json(response).await
        }
    };
    let names = |body: &Value| -> Vec<String> {
        body["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["name"].as_str().expect("name").to_owned())
            .collect()
    };

    let page = list(COLLECTION, vec![("count", "2"), ("offset", "1")]).await;
    assert_eq!(names(&page), ["picket-b", "picket-c"]);
    assert_eq!(page["paging"]["total"], 5);
    assert_eq!(page["paging"]["perPage"], 2);
    assert_eq!(page["paging"]["offset"], 1);
    assert_eq!(page["messages"], Value::Array(vec![]));
    assert!(
        page["origin"]
            .as_str()
            .expect("origin")
            .ends_with(COLLECTION)
    );

    let all = list(COLLECTION, vec![("count", "0")]).await;
    assert_eq!(names(&all).len(), 5);
    let default = list(COLLECTION, vec![]).await;
    assert_eq!(default["paging"]["perPage"], 30);
    assert_eq!(names(&default).len(), 5);
    let past_end = list(COLLECTION, vec![("offset", "9")]).await;
    assert!(names(&past_end).is_empty());
    assert_eq!(past_end["paging"]["total"], 5);

    let everywhere = list("/servicesNS/-/-/saved/searches", vec![("count", "0")]).await;
    assert_eq!(names(&everywhere).len(), 6);
    assert!(names(&everywhere).contains(&"customer search".to_owned()));

    let bad = http
        .get(url(&sim, COLLECTION))
        .bearer_auth(TOKEN)
        .query(&[("output_mode", "json"), ("count", "many")])
        .send()
        .await
        .expect("send");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_unsupported_and_invalid_arguments_are_400() {
    let sim = start().await;
    let http = client();
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[("search", "index=main")],
            "required arguments are missing: name",
        ),
        (
            &[("name", "picket-x")],
            "required arguments are missing: search",
        ),
        (
            &[
                ("name", "picket-x"),
                ("search", "index=main"),
                ("bogus", "1"),
            ],
            "Argument \"bogus\" is not supported by this handler.",
        ),
        (
            &[
                ("name", "picket-x"),
                ("search", "index=main"),
                ("alert.severity", "9"),
            ],
            "alert.severity",
        ),
        (
            &[
                ("name", "picket-x"),
                ("search", "index=main"),
                ("alert_type", "lots"),
            ],
            "alert_type",
        ),
        (
            &[
                ("name", "picket-x"),
                ("search", "index=main"),
                ("cron_schedule", "every minute"),
            ],
            "cron_schedule",
        ),
    ];
    for (form, expected) in cases {
        let response = create(&sim, &http, form).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form:?}");
        let text = message_text(&json(response).await);
        assert!(text.contains(expected), "{form:?}: {text}");
    }
    assert!(sim.saved_searches().is_empty());

    // The action.* family is accepted.
    let ok = create(
        &sim,
        &http,
        &[
            ("name", "picket-x"),
            ("search", "index=main"),
            ("action.email", "0"),
            ("action.email.to", "a@b"),
        ],
    )
    .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn without_output_mode_json_data_requests_are_400_xml() {
    let sim = start().await;
    let http = client();
    let response = http
        .get(url(&sim, COLLECTION))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = response.text().await.expect("body");
    assert!(body.contains("<msg type=\"ERROR\">"), "{body}");
    assert!(body.contains("output_mode=json"), "{body}");
}

#[tokio::test]
async fn status_fault_answers_before_auth_and_clears() {
    let sim = start().await;
    let http = client();
    sim.set_fault(Some(Fault::Status(503)));
    for request in [
        http.get(url(&sim, COLLECTION)).bearer_auth(TOKEN),
        http.get(url(&sim, COLLECTION)),
    ] {
        let response = request
            .query(&[("output_mode", "json")])
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = json(response).await;
        assert_eq!(body["messages"][0]["type"], "ERROR");
    }
    sim.set_fault(Some(Fault::Status(429)));
    let limited = create(
        &sim,
        &http,
        &[("name", "picket-x"), ("search", "index=main")],
    )
    .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(sim.saved_searches().is_empty());
    assert_eq!(sim.request_count(), 3);

    sim.set_fault(None);
    let created = create(
        &sim,
        &http,
        &[("name", "picket-x"), ("search", "index=main")],
    )
    .await;
    assert_eq!(created.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn delay_fault_holds_requests() {
    let sim = start().await;
    let http = client();
    sim.set_fault(Some(Fault::Delay(Duration::from_millis(400))));
    let started = Instant::now();
    let response = http
        .get(url(&sim, "/services/server/info?output_mode=json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(400));

    let impatient = Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let error = impatient
        .get(url(&sim, "/services/server/info?output_mode=json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect_err("times out");
    assert!(error.is_timeout(), "{error}");
}

#[tokio::test]
async fn drop_connection_fault_cuts_new_and_pooled_connections() {
    let sim = start().await;
    let http = client();
    let info = url(&sim, "/services/server/info?output_mode=json");
    // Open a pooled keep-alive connection first.
    let warm = http
        .get(&info)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(warm.status(), StatusCode::OK);
    let _ = warm.bytes().await;

    sim.set_fault(Some(Fault::DropConnection));
    for client in [http.clone(), client()] {
        let error = client
            .get(&info)
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect_err("no answer");
        assert!(error.status().is_none(), "{error}");
    }

    sim.set_fault(None);
    let back = client()
        .get(&info)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("send");
    assert_eq!(back.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let sim = start().await;
    let http = client();
    let info = format!("{}/services/server/info?output_mode=json", sim.base_url());
    assert!(http.get(&info).bearer_auth(TOKEN).send().await.is_ok());
    sim.shutdown().await;
    let error = client()
        .get(&info)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect_err("closed");
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn error_text_suffix_is_in_every_error_answer_and_only_there() {
    let canary = "canary-5f1e2d";
    let sim = SplunkSim::builder()
        .token(TOKEN)
        .error_text_suffix(canary)
        .start()
        .await
        .unwrap();
    let http = client();
    // 401, JSON.
    let r = http
        .get(url(&sim, "/services/server/info?output_mode=json"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v = json(r).await;
    let text = v["messages"][0]["text"].as_str().unwrap();
    assert_eq!(text, format!("call not properly authenticated {canary}"));
    // 400, XML.
    let r = http
        .get(url(&sim, "/services/server/info"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains(&format!(" {canary}</msg>"))
    );
    // Injected fault.
    sim.set_fault(Some(Fault::Status(429)));
    let r = http
        .get(url(&sim, "/services/server/info?output_mode=json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.unwrap().contains(canary));
    sim.set_fault(None);
    // Success answers are untouched.
    let r = http
        .get(url(&sim, "/services/server/info?output_mode=json"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!r.text().await.unwrap().contains(canary));
    assert_eq!(sim.suffixed_error_count(), 3);
}
