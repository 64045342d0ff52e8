//! The web console in a real headless Chromium (Debian's `chromium`, driven
//! through `chromedriver` with WebDriver), against real server and agent
//! processes and the Splunk simulator: signing in, the decision buttons
//! absent for the requester and a Viewer, an agent shown offline when it
//! stops, approving as a second user and watching the item turn "applied"
//! live (Server-Sent Events, no reload), requesting a rollback and rejecting
//! it with a comment, a rule's validation error shown at its line, and the
//! audit checkpoint shown verified. Screenshots of the main pages go to
//! `$CARGO_TARGET_DIR/console-screenshots/` (a CI artifact).
//!
//! Needs `chromium` and `chromium-driver` (`apt-get install -y chromium
//! chromium-driver`); without them the test fails saying so.

// Test code: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use picket_e2e::api::PASSWORD;
use picket_e2e::stack::{SPLUNK_HEC_TOKEN, Stack, StackOpts};
use picket_e2e::wait;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Generous bound for eventual conditions (slow CI machines).
const EVENTUALLY: Duration = Duration::from_secs(90);
/// A positive and a negative case, as typed into the rule form.
const TESTS: &str = r#"[{"name": "alice runs it", "expect": "match", "events": [{"EventCode": "4104", "user": "alice"}]},
{"name": "bob does not", "expect": "no_match", "events": [{"EventCode": "4104", "user": "bob"}]}]"#;

/// Where screenshots go: `$CARGO_TARGET_DIR/console-screenshots`, else the
/// target directory this test binary was built in.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/debug/deps/console-<hash> → target
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_owned()
        });
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console browser tests need Debian's Chromium and its WebDriver. \
                 Install them with `sudo apt-get install -y chromium chromium-driver` (package {package}); \
                 .ci/run does this in its browser block."
            );
        }
        picket_e2e::init_crypto();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that dropping it also ends the
            // Chromium it started, even when the test fails half-way.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        wait::until("chromedriver to listen", EVENTUALLY, || async {
            Ok(http
                .get(format!("{url}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ()))
        })
        .await
        .unwrap();
        Driver { child, url }
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--force-device-scale-factor=1"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // The whole group: chromedriver and the browser it started.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.start_kill();
    }
}

struct Ui<'a> {
    c: &'a Client,
    base: &'a str,
    shots: PathBuf,
}

impl Ui<'_> {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn sign_in(&self, email: &str, then: &str) {
        self.go(&format!("/login?next={then}")).await;
        self.c
            .wait()
            .at_most(EVENTUALLY)
            .for_element(Locator::Css("#email"))
            .await
            .unwrap()
            .send_keys(email)
            .await
            .unwrap();
        self.c
            .find(Locator::Css("#password"))
            .await
            .unwrap()
            .send_keys(PASSWORD)
            .await
            .unwrap();
        self.c
            .find(Locator::Css("button[type=submit].primary"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.c
            .wait()
            .at_most(EVENTUALLY)
            .for_element(Locator::Css("header .who .email"))
            .await
            .unwrap();
        let who = self.text("header .who .email").await;
        assert_eq!(who, email);
    }

    async fn sign_out(&self) {
        // From a page with the signed-in chrome (error pages have none).
        self.go("/account").await;
        self.c
            .find(Locator::Css("header .who button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.c
            .wait()
            .at_most(EVENTUALLY)
            .for_element(Locator::Css("#email"))
            .await
            .unwrap();
    }

    async fn text(&self, css: &str) -> String {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    async fn has(&self, css: &str) -> bool {
        !self.c.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Reloads `path` until `css` has text containing `want`; on timeout the
    /// failure says what the page showed last.
    async fn reload_until(&self, path: &str, css: &str, want: &str) {
        let last = std::sync::Mutex::new(Vec::<String>::new());
        let waited = wait::until(
            &format!("{css} to read {want:?} on {path}"),
            EVENTUALLY,
            || async {
                self.go(path).await;
                let found = self.c.find_all(Locator::Css(css)).await?;
                let mut seen = Vec::new();
                for e in found {
                    let text = e.text().await?;
                    if text.contains(want) {
                        return Ok(Some(()));
                    }
                    seen.push(text);
                }
                *last.lock().unwrap() = seen;
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(None)
            },
        )
        .await;
        if let Err(e) = waited {
            panic!("{e}; last seen: {:?}", last.lock().unwrap());
        }
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }
}

impl Ui<'_> {
    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks a button that asks for confirmation (console.js) and accepts it.
    async fn click_confirmed(&self, css: &str) {
        self.click(css).await;
        self.c.accept_alert().await.unwrap();
    }

    /// The path of the current page.
    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_chromium_approve_live_roles_rules_fleet_audit() {
    let driver = Driver::start().await;
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    s.admin
        .post_ok(
            "/v1/users",
            json!({ "email": "vic@acme.test", "password": PASSWORD, "role": "viewer" }),
        )
        .await
        .unwrap();
    let (rule_id, _) = s
        .create_rule(
            "Brute force on Windows logons",
            "index=wineventlog EventCode=4625\n| stats count by user\n| where count > 10",
        )
        .await
        .unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();
    // Test events go to Splunk through HEC (the simulator's).
    let (status, body) = s
        .admin
        .put(
            &format!("/v1/connections/{}/hec", s.connection_id),
            json!({ "url": s.sim.base_url(), "test_index": "picket_test_idx", "token": SPLUNK_HEC_TOKEN }),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    // Wait for the first health report, so the fleet shows real figures.
    let agent_path = format!("/v1/agents/{}", s.agent.agent_id);
    wait::until("a health report", EVENTUALLY, || async {
        let a = s.admin.get_ok(&agent_path).await?;
        Ok(a["health"].is_object().then_some(()))
    })
    .await
    .unwrap();

    let c = driver.browser().await;
    let ui = Ui {
        c: &c,
        base: &s.server.url,
        shots: screenshot_dir(),
    };
    let dep_path = format!("/deployments/{dep}");

    // The requester signs in and lands back on the request: no decision buttons.
    ui.sign_in("dana@acme.test", &dep_path).await;
    assert_eq!(ui.path().await, dep_path);
    for button in ["#approve", "#reject", "#request-changes"] {
        assert!(!ui.has(button).await, "the requester sees {button}");
    }
    assert!(
        ui.text("#why-not")
            .await
            .contains("You requested this deployment")
    );
    assert_eq!(ui.text("#deployment-status").await, "awaiting approval");
    ui.sign_out().await;

    // A Viewer: no decision buttons, and Settings is a 403 page.
    ui.sign_in("vic@acme.test", &dep_path).await;
    for button in ["#approve", "#reject", "#request-changes"] {
        assert!(!ui.has(button).await, "a viewer sees {button}");
    }
    assert!(
        ui.text("#why-not")
            .await
            .contains("Your role cannot approve")
    );
    ui.go("/settings").await;
    assert_eq!(ui.text("h1").await, "Not allowed");
    ui.sign_out().await;

    // The agent stops: the fleet shows it offline.
    ui.sign_in("sam@acme.test", "/fleet").await;
    s.agent.kill().await;
    ui.reload_until("/fleet", "[data-agent-status]", "offline")
        .await;
    ui.shot("fleet-offline").await;

    // Sam approves while the agent is away: the item is queued.
    ui.go(&dep_path).await;
    assert!(
        ui.text("#approvals-needed")
            .await
            .contains("1 still needed")
    );
    assert!(ui.has("#reject").await && ui.has("#request-changes").await);
    ui.shot("request").await;
    c.find(Locator::Css("#comment"))
        .await
        .unwrap()
        .send_keys("Looks right; thresholds match the runbook.")
        .await
        .unwrap();
    ui.click_confirmed("#approve").await;
    c.wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("#why-not"))
        .await
        .unwrap();
    assert_eq!(ui.text("#deployment-status").await, "queued");
    assert!(
        ui.text(".approvals")
            .await
            .contains("sam@acme.test approved")
    );
    // A marker on this page's window: a reload would lose it.
    c.execute("window.__picketMarker = 'still here'; return true;", vec![])
        .await
        .unwrap();

    // The agent comes back, receives the job, applies it: the badge turns
    // "applied" through the live stream, on the same page.
    s.agent.start().unwrap();
    wait::until(
        "the status to turn applied without reload",
        EVENTUALLY,
        || async {
            let t = c
                .find(Locator::Css("#deployment-status"))
                .await?
                .text()
                .await?;
            Ok((t == "applied").then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nagent log:\n{}",
            picket_e2e::stack::tail(&s.agent.log(), 30)
        )
    });
    let marker = c
        .execute("return window.__picketMarker || null;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!("still here"), "the page was reloaded");
    assert!(s.sim.saved_search(&format!("picket-{rule_id}")).is_some());

    // What is live can be rolled back: the rollback request waits for approval.
    ui.go(&dep_path).await;
    assert!(ui.has("#rollback-form").await, "no rollback offered");
    ui.shot("request-applied").await;
    ui.fill("#rollback-comment", "Too noisy on the domain controllers.")
        .await;
    ui.click_confirmed("#rollback-button").await;
    // The request page had a #why-not too: wait for the new page's address.
    let rollback_path = wait::until("the rollback request page", EVENTUALLY, || async {
        let p = c.current_url().await?.path().to_owned();
        Ok((p != dep_path && p.starts_with("/deployments/")).then_some(p))
    })
    .await
    .unwrap();
    assert_eq!(ui.text("#deployment-status").await, "awaiting approval");
    assert!(ui.text("h1").await.contains("rollback"));

    // The deployments history shows the first applied, the rollback waiting.
    ui.go("/deployments").await;
    assert_eq!(
        ui.text(&format!("[data-deployment-status=\"{dep}\"]"))
            .await,
        "applied"
    );
    ui.shot("deployments").await;
    ui.go("/approvals").await;
    ui.shot("approvals").await;
    ui.reload_until("/fleet", "[data-agent-status]", "online")
        .await;
    ui.shot("fleet").await;
    ui.go(&format!("/fleet/{}", s.agent.agent_id)).await;
    assert!(ui.has("svg.chart polyline").await, "no chart drawn");
    ui.shot("agent").await;

    // A rule whose query holds a refused command: the message names its
    // line, under the query, and what was typed stays.
    ui.go("/rules/new").await;
    ui.fill("#title", "Encoded PowerShell by alice").await;
    ui.fill("#query", "index=main EventCode=4104\n| delete")
        .await;
    ui.fill("#tests", TESTS).await;
    ui.click("form.rule-form button[type=submit]").await;
    let findings = c
        .wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("#findings"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(findings.contains("query line 2, column 3:"), "{findings}");
    assert_eq!(
        c.find(Locator::Css("#query"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap(),
        Some("true".to_owned())
    );
    assert_eq!(
        c.find(Locator::Css("#title"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap(),
        Some("Encoded PowerShell by alice".to_owned())
    );
    ui.shot("rule-edit-error").await;
    ui.fill("#query", "index=main EventCode=4104 user=alice")
        .await;
    ui.click("form.rule-form button[type=submit]").await;
    c.wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("pre.query"))
        .await
        .unwrap();
    assert_eq!(ui.text("h1").await, "Encoded PowerShell by alice");
    // A second version (the cases carry over in the form); its tests run
    // on the Splunk simulator through the agent, each case's result shown.
    let new_rule = ui.path().await;
    ui.go(&format!("{new_rule}/edit")).await;
    assert!(
        c.find(Locator::Css("#tests"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
            .contains("alice runs it")
    );
    ui.fill("#query", "index=main EventCode=4104\n| search user=alice")
        .await;
    ui.click("form.rule-form button[type=submit]").await;
    c.wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("pre.query"))
        .await
        .unwrap();
    assert!(ui.text("#last-run").await.contains("Not run yet"));
    ui.click("#run-tests").await;
    // The POST's redirect shows the run; reloading before it lands would
    // cancel the form submission.
    c.wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("#run-status"))
        .await
        .unwrap();
    ui.reload_until(&format!("{new_rule}?a=1&b=2"), "#run-status", "passed")
        .await;
    let results = c
        .find_all(Locator::Css("[data-case-result]"))
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r.text().await.unwrap(), "passed");
    }
    assert!(ui.has("pre.diff .add").await, "no added line in the diff");
    ui.shot("rule").await;
    ui.go("/rules").await;
    ui.shot("rules").await;
    ui.sign_out().await;

    // The admin: home lists the waiting rollback; rejecting it needs a reason
    // and records it.
    ui.sign_in("admin@acme.test", "/").await;
    ui.shot("home").await;
    ui.go(&rollback_path).await;
    ui.fill("#comment", "Tune the threshold instead of rolling back.")
        .await;
    ui.click_confirmed("#reject").await;
    c.wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("#why-not"))
        .await
        .unwrap();
    assert_eq!(ui.text("#deployment-status").await, "rejected");
    assert!(
        ui.text(".approvals")
            .await
            .contains("admin@acme.test rejected")
    );

    // Someone edits the deployed search in Splunk: a drift check finds it,
    // the drift page lists it, and redeploying opens a request.
    let name = format!("picket-{rule_id}");
    let mut edited = s.sim.saved_search(&name).unwrap();
    edited
        .content
        .insert("search".into(), "index=* | head 1".into());
    s.sim.insert_saved_search(edited);
    s.requester
        .post_ok(
            &format!("/v1/connections/{}/drift-check", s.connection_id),
            json!({}),
        )
        .await
        .unwrap();
    ui.reload_until("/drift", "[data-drift-state]", "drifted")
        .await;
    ui.shot("drift").await;
    ui.click("button[name=resolution][value=redeploy]").await;
    wait::until("the redeploy request page", EVENTUALLY, || async {
        let p = c.current_url().await?.path().to_owned();
        Ok((p.starts_with("/deployments/") && p != rollback_path).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(ui.text("#deployment-status").await, "awaiting approval");
    assert!(ui.text("h1").await.contains("redeploy"));

    // The audit log with the latest checkpoint, verified.
    s.admin
        .post_ok("/v1/audit/checkpoint", json!({}))
        .await
        .unwrap();
    ui.reload_until("/audit", "#checkpoint-state", "verified")
        .await;
    assert!(ui.text("#checkpoint").await.contains("consistent"));
    ui.shot("audit").await;
    ui.go("/settings").await;
    ui.shot("settings").await;
    ui.fill("#tok-label", "siem-gw-02").await;
    ui.click("#enrollment button[type=submit]").await;
    c.wait()
        .at_most(EVENTUALLY)
        .for_element(Locator::Css("#secret"))
        .await
        .unwrap();
    assert!(
        ui.text("#secret")
            .await
            .contains("picket-agent enroll --server")
    );
    ui.shot("settings-token").await;
    c.close().await.unwrap();
}
