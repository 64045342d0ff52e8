//! The web console over plain HTTP (no JavaScript, as a browser with JS off
//! or a screen reader's simple browser would use it): claiming a fresh
//! install, sessions required everywhere, the strict CSP with no inline
//! script or style in any page, role checks shown as HTML pages, forms
//! (sign-in, rules with validation at the field, deployment request and
//! approval) and the fleet table over 10,000 agents.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use picket_server::db::entity::{agent, user};
use sea_orm::{ActiveModelTrait as _, ConnectionTrait as _, EntityTrait as _, Set};
use support::{PASSWORD, TestApp, app};
use uuid::Uuid;

/// A browser-like client that does not follow redirects (the tests look at them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
}

struct Page {
    status: u16,
    location: String,
    csp: String,
    content_type: String,
    set_cookie: String,
    html: String,
}

async fn page(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> Page {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = browser()
        .request(m, app.url(path))
        .header("accept", "text/html");
    if let Some(c) = cookie {
        req = req.header("cookie", format!("picket_session={c}"));
    }
    if method == "POST" {
        req = req.form(form);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (location, csp, content_type, set_cookie) = (
        h("location"),
        h("content-security-policy"),
        h("content-type"),
        h("set-cookie"),
    );
    let status = r.status().as_u16();
    Page {
        status,
        location,
        csp,
        content_type,
        set_cookie,
        html: r.text().await.unwrap(),
    }
}

async fn get(app: &TestApp, path: &str, cookie: &str) -> Page {
    page(app, "GET", path, Some(cookie), &[], &[]).await
}

async fn post(app: &TestApp, path: &str, cookie: &str, form: &[(&str, &str)]) -> Page {
    page(app, "POST", path, Some(cookie), form, &[]).await
}

/// The session secret a `Set-Cookie` carries.
fn cookie_of(p: &Page) -> String {
    let v = p
        .set_cookie
        .strip_prefix("picket_session=")
        .unwrap_or_else(|| panic!("no session cookie in {:?}", p.set_cookie));
    v.split(';').next().unwrap().to_owned()
}

/// Everything a page must not contain for the CSP to hold without weakening
/// it: inline scripts, inline styles, event-handler attributes, `javascript:` URLs.
fn assert_no_inline(path: &str, html: &str) {
    let lower = html.to_lowercase();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find("<script") {
        let tag_end = rest[i..].find('>').unwrap() + i;
        let tag = &rest[i..tag_end];
        assert!(tag.contains(" src="), "{path}: inline <script> {tag}");
        let after = &rest[tag_end + 1..];
        assert!(
            after.starts_with("</script>"),
            "{path}: a script tag with a body"
        );
        rest = after;
    }
    assert!(!lower.contains("<style"), "{path}: <style> element");
    assert!(!lower.contains(" style="), "{path}: style attribute");
    assert!(!lower.contains("javascript:"), "{path}: javascript: URL");
    for attr in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onerror=",
        " onchange=",
    ] {
        assert!(!lower.contains(attr), "{path}: inline handler {attr}");
    }
}

/// Every form control a person fills in has a `<label for=…>` naming it
/// (hidden fields excepted), so screen readers and clicks on the text work.
fn assert_labelled(path: &str, html: &str) {
    for open in ["<input", "<select", "<textarea"] {
        let mut rest = html;
        while let Some(i) = rest.find(open) {
            let end = rest[i..].find('>').unwrap() + i;
            let tag = &rest[i..end];
            rest = &rest[end..];
            if tag.contains("type=\"hidden\"") {
                continue;
            }
            let id = tag
                .split(" id=\"")
                .nth(1)
                .and_then(|t| t.split('"').next())
                .unwrap_or_else(|| panic!("{path}: a control without an id: {tag}"));
            assert!(
                html.contains(&format!("<label for=\"{id}\"")),
                "{path}: no label for #{id}"
            );
        }
    }
}

/// A tenant with an admin, a requester (User), an approver (User), a Viewer,
/// an agent, a connection, a rule and a deployment awaiting approval; every
/// session as a console cookie.
struct World {
    app: TestApp,
    admin: String,
    dana: String,
    sam: String,
    viewer: String,
    agent: String,
    rule: String,
    dep: String,
}

async fn world() -> World {
    let app = app().start().await;
    let admin = app
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let (_, dana) = app.user(&admin, "dana@acme.test", "user", false).await;
    let (_, sam) = app.user(&admin, "sam@acme.test", "user", false).await;
    let (_, viewer) = app.user(&admin, "vic@acme.test", "viewer", false).await;
    let agent = app.agent(&admin).await;
    let conn = app.connection(&admin, &agent, "prod-splunk").await;
    let rule = app.rule(&dana, "Brute force").await;
    let dep = app.deployment(&dana, &rule, &conn).await;
    World {
        app,
        admin,
        dana,
        sam,
        viewer,
        agent,
        rule,
        dep,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_install_claims_from_the_console_then_signs_in_and_out() {
    let app = app().start().await;
    let p = page(&app, "GET", "/login", None, &[], &[]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/claim"));
    let p = page(&app, "GET", "/", None, &[], &[]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/login?next=/"));

    // A weak password is refused on the form, with the policy's message.
    let p = page(
        &app,
        "POST",
        "/claim",
        None,
        &[
            ("tenant_name", "Acme"),
            ("email", "admin@acme.test"),
            ("password", "short"),
        ],
        &[],
    )
    .await;
    assert_eq!(p.status, 400);
    assert!(p.html.contains("class=\"error\""), "{}", p.html);
    assert!(
        p.html.contains("value=\"admin@acme.test\""),
        "the form keeps what was typed"
    );

    let p = page(
        &app,
        "POST",
        "/claim",
        None,
        &[
            ("tenant_name", "Acme"),
            ("email", "admin@acme.test"),
            ("password", PASSWORD),
        ],
        &[],
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, "/"));
    assert!(p.set_cookie.contains("HttpOnly"), "{}", p.set_cookie);
    assert!(p.set_cookie.contains("SameSite=Lax"), "{}", p.set_cookie);
    let cookie = cookie_of(&p);
    let home = get(&app, "/", &cookie).await;
    assert_eq!(home.status, 200);
    assert!(home.html.contains("What needs you"));
    assert!(home.html.contains("admin@acme.test"));

    // Claimed: the claim page is gone, sign-in is the way in.
    let p = page(&app, "GET", "/claim", None, &[], &[]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/login"));

    // Wrong password: the form again, 401, a message, no cookie.
    let p = page(
        &app,
        "POST",
        "/login",
        None,
        &[
            ("email", "admin@acme.test"),
            ("password", "wrong-password-123"),
            ("next", "/fleet"),
        ],
        &[],
    )
    .await;
    assert_eq!(p.status, 401);
    assert!(p.html.contains("Wrong email or password."));
    assert!(p.set_cookie.is_empty());

    // Sign-out ends the session on the server.
    let p = post(&app, "/logout", &cookie, &[]).await;
    assert_eq!((p.status, p.location.as_str()), (303, "/login"));
    let p = get(&app, "/", &cookie).await;
    assert_eq!(p.status, 303, "a signed-out session is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_route_requires_a_session_and_comes_back_after_sign_in() {
    let w = world().await;
    let app = &w.app;
    let get_paths = [
        "/".to_owned(),
        "/approvals".into(),
        "/deployments".into(),
        "/deployments/live".into(),
        format!("/deployments/{}", w.dep),
        "/rules".into(),
        "/rules/new".into(),
        format!("/rules/{}", w.rule),
        format!("/rules/{}/edit", w.rule),
        "/fleet?sort=host&page=0".into(),
        format!("/fleet/{}", w.agent),
        "/audit".into(),
        "/settings".into(),
        "/account".into(),
    ];
    for path in &get_paths {
        for cookie in [None, Some("not-a-session"), Some("")] {
            let p = page(app, "GET", path, cookie, &[], &[]).await;
            assert_eq!(p.status, 303, "GET {path} with {cookie:?}");
            assert!(
                p.location.starts_with("/login?next="),
                "GET {path}: {}",
                p.location
            );
        }
    }
    let post_paths = [
        "/logout".to_owned(),
        "/account/password".into(),
        format!("/account/sessions/{}/revoke", "0".repeat(64)),
        format!("/deployments/{}/approve", w.dep),
        "/rules/new".into(),
        format!("/rules/{}/edit", w.rule),
        format!("/rules/{}/deploy", w.rule),
        format!("/settings/users/{}/role", Uuid::nil()),
        "/settings/invitations".into(),
        "/settings/api-keys".into(),
        format!("/settings/api-keys/{}/revoke", Uuid::nil()),
        "/settings/enrollment-tokens".into(),
        "/settings/connections".into(),
    ];
    for path in &post_paths {
        let p = page(app, "POST", path, Some("expired"), &[("x", "y")], &[]).await;
        assert_eq!(p.status, 303, "POST {path}");
        assert_eq!(p.location, "/login?next=/", "POST {path}");
    }
    // The page asked for is where sign-in goes back to (and nowhere else).
    let p = page(app, "GET", "/fleet?sort=version&page=0", None, &[], &[]).await;
    assert_eq!(p.location, "/login?next=/fleet%3Fsort%3Dversion%26page%3D0");
    let signed = page(
        app,
        "POST",
        "/login",
        None,
        &[
            ("email", "sam@acme.test"),
            ("password", PASSWORD),
            ("next", "/fleet?sort=version&page=0"),
        ],
        &[],
    )
    .await;
    assert_eq!(
        (signed.status, signed.location.as_str()),
        (303, "/fleet?sort=version&page=0")
    );
    let evil = page(
        app,
        "POST",
        "/login",
        None,
        &[
            ("email", "sam@acme.test"),
            ("password", PASSWORD),
            ("next", "//evil.example/"),
        ],
        &[],
    )
    .await;
    assert_eq!(evil.location, "/", "an off-site next is ignored");
    // Static files and sign-in pages are public.
    for path in [
        "/login",
        "/static/console.css",
        "/static/console.js",
        "/invitation",
    ] {
        let p = page(app, "GET", path, None, &[], &[]).await;
        assert_eq!(p.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_has_the_strict_csp_and_no_inline_script_or_style() {
    let w = world().await;
    let app = &w.app;
    let paths = [
        "/".to_owned(),
        "/approvals".into(),
        "/deployments".into(),
        format!("/deployments/{}", w.dep),
        "/rules".into(),
        "/rules?q=brute&severity=high".into(),
        "/rules/new".into(),
        format!("/rules/{}", w.rule),
        format!("/rules/{}/edit", w.rule),
        "/fleet".into(),
        "/fleet?live=disconnected&sort=last_seen&dir=desc".into(),
        format!("/fleet/{}", w.agent),
        "/audit".into(),
        "/audit?outcome=denied&since=2020-01-01".into(),
        "/settings".into(),
        "/account".into(),
        "/drift".into(),
        format!("/deployments/{}", Uuid::nil()),
        "/no-such-page".into(),
    ];
    for path in &paths {
        let p = get(app, path, &w.admin).await;
        assert!(
            matches!(p.status, 200 | 404),
            "{path}: {} {}",
            p.status,
            p.html
        );
        assert_eq!(p.csp, picket_server::api::CSP, "{path}");
        assert!(p.content_type.starts_with("text/html"), "{path}");
        assert!(p.html.starts_with("<!doctype html>"), "{path}");
        assert!(p.html.contains("<main id=\"main\""), "{path}");
        assert_no_inline(path, &p.html);
        assert_labelled(path, &p.html);
    }
    for path in ["/login", "/invitation?token=abc", "/claim"] {
        let p = page(app, "GET", path, None, &[], &[]).await;
        assert_eq!(p.csp, picket_server::api::CSP, "{path}");
        assert_no_inline(path, &p.html);
        assert_labelled(path, &p.html);
    }
    // The form shown again with errors, and the settings page showing a secret.
    let p = post(
        app,
        &format!("/rules/{}/edit", w.rule),
        &w.dana,
        &[
            ("title", "x"),
            ("severity", "high"),
            ("query", "q"),
            ("cron", "bad"),
            ("earliest", "-5m"),
            ("latest", "now"),
        ],
    )
    .await;
    assert_eq!(p.status, 422, "validation findings answer 422");
    assert_no_inline("rule form with errors", &p.html);
    assert_labelled("rule form with errors", &p.html);
    let p = post(
        app,
        "/settings/enrollment-tokens",
        &w.admin,
        &[("label", "gw")],
    )
    .await;
    assert_eq!(p.status, 200);
    assert_no_inline("settings with a token", &p.html);

    // The audit page's export link works with the console's session.
    let audit = get(app, "/audit?since=2020-01-01", &w.admin).await;
    let i = audit.html.find("/v1/audit/export?format=jsonl").unwrap();
    let href: String = audit.html[i..].chars().take_while(|c| *c != '"').collect();
    let export = get(app, &href.replace("&amp;", "&"), &w.admin).await;
    assert_eq!(export.status, 200, "{href}: {}", export.html);

    // Static files: long-lived cache, right types.
    let css = page(app, "GET", "/static/console.css", None, &[], &[]).await;
    assert!(css.content_type.starts_with("text/css"));
    let r = browser()
        .get(app.url("/static/console.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_button_only_for_those_who_may_and_the_server_refuses_the_rest() {
    let w = world().await;
    let app = &w.app;
    let path = format!("/deployments/{}", w.dep);
    // The requester: no button, the reason instead; a forged post is refused.
    let p = get(app, &path, &w.dana).await;
    assert_eq!(p.status, 200);
    assert!(!p.html.contains("id=\"approve\""), "requester sees approve");
    assert!(p.html.contains("You requested this deployment"));
    let p = post(
        app,
        &format!("{path}/approve"),
        &w.dana,
        &[("comment", "mine")],
    )
    .await;
    assert_eq!(p.status, 403);
    assert!(p.content_type.starts_with("text/html"));
    assert!(
        p.html.contains(
            "the requester of a deployment cannot approve, reject or request changes on it"
        )
    );
    // A Viewer without the approver flag: no button; refused by the role matrix.
    let p = get(app, &path, &w.viewer).await;
    assert!(!p.html.contains("id=\"approve\""), "viewer sees approve");
    assert!(p.html.contains("Your role cannot approve deployments."));
    let p = post(app, &format!("{path}/approve"), &w.viewer, &[]).await;
    assert_eq!(p.status, 403);
    assert!(p.html.contains("Not allowed"));
    // A second User: the button, and one approval of one needed.
    let p = get(app, &path, &w.sam).await;
    assert!(p.html.contains("id=\"approve\""));
    assert!(p.html.contains("1 still needed"));
    let still = app
        .scalar(&format!(
            "SELECT status FROM deployments WHERE id = '{}'",
            w.dep
        ))
        .await;
    assert!(
        still.is_empty() || still[0] == "pending_approval",
        "refusals changed nothing: {still:?}"
    );
    // A cross-site form post with the session cookie is refused (CSRF).
    let p = page(
        app,
        "POST",
        &format!("{path}/approve"),
        Some(&w.sam),
        &[],
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(p.status, 403);
    assert!(p.html.contains("cross-site request refused"));
    // The approver's form post works without JavaScript.
    let p = post(
        app,
        &format!("{path}/approve"),
        &w.sam,
        &[("comment", "LGTM")],
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, path.as_str()));
    let p = get(app, &path, &w.sam).await;
    assert!(p.html.contains("data-deployment-status"));
    assert!(p.html.contains(">queued<"), "{}", p.html);
    assert!(p.html.contains("LGTM"));
    assert!(!p.html.contains("id=\"approve\""), "no second approval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_and_user_get_a_403_page_on_admin_pages() {
    let w = world().await;
    let app = &w.app;
    for cookie in [&w.viewer, &w.sam] {
        for path in ["/settings", "/audit"] {
            let p = get(app, path, cookie).await;
            assert_eq!(p.status, 403, "{path}");
            assert!(p.content_type.starts_with("text/html"));
            assert!(p.html.contains("Not allowed"), "{}", p.html);
            assert!(p.html.contains("does not allow this"));
        }
        let p = post(
            app,
            "/settings/invitations",
            cookie,
            &[("email", "x@acme.test"), ("role", "admin")],
        )
        .await;
        assert_eq!(p.status, 403);
    }
    // Nor is the Settings link shown to them.
    let p = get(app, "/", &w.viewer).await;
    assert!(!p.html.contains("href=\"/settings\""));
    assert!(!p.html.contains("href=\"/audit\""));
    // A Viewer cannot author rules either.
    let p = get(app, "/rules/new", &w.viewer).await;
    assert_eq!(p.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_forms_show_the_message_at_the_field_and_work_without_js() {
    let w = world().await;
    let app = &w.app;
    let mut form = vec![
        ("title", "Suspicious PowerShell"),
        ("description", "Encoded commands."),
        ("severity", "high"),
        ("query", "index=win EventCode=4104 ScriptBlockText=*-enc*"),
        ("cron", "61 * * * *"),
        ("earliest", "-15m"),
        ("latest", "now"),
    ];
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert_eq!(p.status, 422);
    assert!(p.html.contains("id=\"cron-error\""), "{}", p.html);
    assert!(
        p.html
            .contains("aria-invalid=\"true\" aria-describedby=\"cron-error\"")
    );
    assert!(
        p.html.contains("value=\"Suspicious PowerShell\""),
        "what was typed stays"
    );
    // A refused command is shown with its line and column, under the query.
    form[4] = ("cron", "*/15 * * * *");
    form[3] = ("query", "index=win EventCode=4104\n| delete");
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert_eq!(p.status, 422);
    assert!(p.html.contains("id=\"findings\""), "{}", p.html);
    assert!(p.html.contains("query line 2, column 3:"), "{}", p.html);
    assert!(
        p.html
            .contains("aria-invalid=\"true\" aria-describedby=\"query-error\""),
        "{}",
        p.html
    );
    form[3] = ("query", "index=win EventCode=4104 ScriptBlockText=*-enc*");
    form[0] = ("title", "");
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert!(p.html.contains("id=\"title-error\""), "{}", p.html);
    form[0] = ("title", "Suspicious PowerShell");
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert!(p.location.starts_with("/rules/"));
    let rule_page = get(app, &p.location, &w.sam).await;
    assert!(rule_page.html.contains("Suspicious PowerShell"));
    assert!(rule_page.html.contains("*/15 * * * *"));

    // A new version from the edit form; the rule page diffs v1 → v2.
    let rid = p.location.trim_start_matches("/rules/").to_owned();
    form[3] = (
        "query",
        "index=win EventCode=4104 ScriptBlockText=*-EncodedCommand*",
    );
    let p = post(app, &format!("/rules/{rid}/edit"), &w.sam, &form).await;
    assert_eq!(p.status, 303);
    let rule_page = get(app, &format!("/rules/{rid}?a=1&b=2"), &w.sam).await;
    assert!(
        rule_page.html.contains(
            "<span class=\"del\">- index=win EventCode=4104 ScriptBlockText=*-enc*</span>"
        ),
        "{}",
        rule_page.html
    );
    assert!(rule_page.html.contains("<span class=\"add\">+ index=win"));

    // The rules list filters.
    let list = get(app, "/rules?q=powershell", &w.sam).await;
    assert!(list.html.contains("Suspicious PowerShell"));
    assert!(!list.html.contains("Brute force"));
    let list = get(app, "/rules?severity=low", &w.sam).await;
    assert!(list.html.contains("No rule matches these filters"));

    // Requesting a deployment from the rule page's form.
    let conn = app.scalar("SELECT name FROM siem_connections").await;
    assert_eq!(conn, vec!["prod-splunk".to_owned()]);
    let rule_page = get(app, &format!("/rules/{rid}"), &w.sam).await;
    let marker = "name=\"connection_id\"><option value=\"";
    let i = rule_page.html.find(marker).unwrap() + marker.len();
    let conn_id = rule_page.html[i..i + 36].to_owned();
    let p = post(
        app,
        &format!("/rules/{rid}/deploy"),
        &w.sam,
        &[
            ("version", "2"),
            ("connection_id", conn_id.as_str()),
            ("message", "tuned"),
        ],
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert!(p.location.starts_with("/deployments/"));
    let d = get(app, &p.location, &w.dana).await;
    assert!(d.html.contains("awaiting approval"));
    assert!(d.html.contains("tuned"));
    assert!(
        d.html.contains("id=\"approve\""),
        "dana may approve sam's request"
    );
    assert!(d.html.contains("everything is new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_show_secrets_once_and_install_commands() {
    let w = world().await;
    let app = &w.app;
    let p = post(
        app,
        "/settings/enrollment-tokens",
        &w.admin,
        &[("label", "siem-gw-02"), ("max_uses", "3")],
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.html);
    assert!(p.html.contains("Enrollment token (shown once"));
    assert!(p.html.contains("picket-agent enroll --server"));
    assert!(
        p.html
            .contains("msiexec /i picket-agent-0.1.0-x64.msi /qn SERVER_URL=")
    );
    assert!(p.html.contains("0 of 3"));
    let again = get(app, "/settings", &w.admin).await;
    assert!(
        !again.html.contains("Enrollment token (shown once"),
        "shown once only"
    );

    let body = "name=ci&scope=rules%3Aread&scope=deployments%3Arequest";
    let r = browser()
        .post(app.url("/settings/api-keys"))
        .header("cookie", format!("picket_session={}", w.admin))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let i = html.find("<pre id=\"secret-text\">").unwrap() + "<pre id=\"secret-text\">".len();
    let key = html[i..].split('<').next().unwrap().to_owned();
    assert!(key.starts_with("pk_"), "{key}");
    // The key shown works against the API with its scopes.
    let a = app.get("/v1/rules", &key).await;
    assert_eq!(a.status, 200);

    // Invitations: a link, accepted on the console's invitation page.
    let p = post(
        app,
        "/settings/invitations",
        &w.admin,
        &[
            ("email", "new@acme.test"),
            ("role", "viewer"),
            ("approver", "on"),
        ],
    )
    .await;
    assert_eq!(p.status, 200);
    let i = p.html.find("/invitation?token=").unwrap() + "/invitation?token=".len();
    let token: String = p.html[i..].chars().take_while(|c| *c != '<').collect();
    let accepted = page(
        app,
        "POST",
        "/invitation",
        None,
        &[("token", token.as_str()), ("password", PASSWORD)],
        &[],
    )
    .await;
    assert_eq!(
        (accepted.status, accepted.location.as_str()),
        (303, "/"),
        "{}",
        accepted.html
    );
    let newbie = cookie_of(&accepted);
    let home = get(app, "/", &newbie).await;
    assert!(home.html.contains("new@acme.test"));

    // Password change from the account page; the old password stops working.
    let p = post(
        app,
        "/account/password",
        &newbie,
        &[
            ("current_password", PASSWORD),
            ("new_password", "another-long-passphrase-9"),
        ],
    )
    .await;
    assert_eq!(
        (p.status, p.location.as_str()),
        (303, "/account?done=password")
    );
    assert_eq!(app.login("new@acme.test", PASSWORD).await.status, 401);
    assert_eq!(
        app.login("new@acme.test", "another-long-passphrase-9")
            .await
            .status,
        200
    );
    // Role change (which ends the person's sessions) from the users table (approver flag off again).
    let id = user::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email == "new@acme.test")
        .unwrap()
        .id;
    let p = post(
        app,
        &format!("/settings/users/{id}/role"),
        &w.admin,
        &[("role", "user")],
    )
    .await;
    assert_eq!(p.status, 303);
    let u = user::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((u.role.as_str(), u.approver), ("user", false));
    // One's own role cannot be changed: the page says why.
    let admin_id = user::Entity::find()
        .all(&app.db)
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.email == "admin@acme.test")
        .unwrap()
        .id;
    let p = post(
        app,
        &format!("/settings/users/{admin_id}/role"),
        &w.admin,
        &[("role", "viewer")],
    )
    .await;
    assert_eq!(p.status, 409);
    assert!(p.html.contains("cannot change their own role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_ten_thousand_agents_is_paged_sorted_and_indexed() {
    let w = world().await;
    let app = &w.app;
    let tenant = user::Entity::find()
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .tenant_id;
    let now = picket_server::time::unix_now();
    let started = std::time::Instant::now();
    for chunk in 0..20 {
        let rows: Vec<agent::ActiveModel> = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                agent::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    tenant_id: Set(tenant),
                    hostname: Set(format!("edge-{n:05}")),
                    version: Set(format!("0.1.{}", n % 7)),
                    x25519_public: Set(Uuid::new_v4().as_bytes().to_vec()),
                    ed25519_public: Set(Uuid::new_v4().as_bytes().to_vec()),
                    enrolled_at: Set(now - i64::from(n)),
                    last_seen_at: Set(Some(now - i64::from(n))),
                    last_seq: Set(0),
                    revoked_at: Set(None),
                    previous_ed25519_public: Set(None),
                    previous_x25519_public: Set(None),
                    keys_rotated_at: Set(None),
                    rotate_requested_at: Set(None),
                }
            })
            .collect();
        agent::Entity::insert_many(rows)
            .exec(&app.db)
            .await
            .unwrap();
    }
    println!("inserted 10,000 agents in {:?}", started.elapsed());

    let t = std::time::Instant::now();
    let p = get(app, "/fleet?sort=host&dir=asc&page=3", &w.sam).await;
    let first_page = t.elapsed();
    assert_eq!(p.status, 200);
    assert!(
        p.html.contains("Showing 151–200 of 10001 agents"),
        "{}",
        &p.html[..2000.min(p.html.len())]
    );
    assert!(p.html.contains(">edge-00150<"));
    assert!(p.html.contains(">edge-00199<"));
    assert!(!p.html.contains(">edge-00200<"));
    assert_eq!(p.html.matches("data-agent-status=").count(), 50);
    assert!(p.html.contains("rel=\"next\""));
    assert!(p.html.contains("rel=\"prev\""));

    let p = get(app, "/fleet?sort=host&dir=desc&page=0", &w.sam).await;
    assert!(p.html.contains(">host-1<"), "host-1 sorts after edge-*");
    assert!(p.html.contains("aria-sort=\"descending\""));
    let p = get(app, "/fleet?host=edge-0999&page=0", &w.sam).await;
    assert!(
        p.html.contains("Showing 1–10 of 10 agents"),
        "prefix filter"
    );
    let t = std::time::Instant::now();
    let p = get(
        app,
        "/fleet?live=disconnected&sort=last_seen&dir=desc&page=100",
        &w.sam,
    )
    .await;
    let offline_page = t.elapsed();
    assert!(p.html.contains("Showing 5001–5050 of 10001 agents"));
    let p = get(app, "/fleet?live=connected", &w.sam).await;
    assert!(p.html.contains("No agent matches these filters"));
    let p = get(app, "/fleet?sort=bogus", &w.sam).await;
    assert_eq!(p.status, 400);
    assert!(p.html.contains("sort: expected host"));
    println!(
        "fleet page over 10,001 agents: sorted by host {first_page:?}; not-connected filter, last_seen desc, page 100: {offline_page:?}"
    );

    // The page queries use the console's indexes (no table scan, no sort step).
    for (col, index) in [
        ("hostname", "ix_agents_tenant_hostname"),
        ("version", "ix_agents_tenant_version"),
        ("last_seen_at", "ix_agents_tenant_seen"),
    ] {
        let plan: Vec<String> = app
            .db
            .query_all(sea_orm::Statement::from_string(
                app.db.get_database_backend(),
                format!(
                    "EXPLAIN QUERY PLAN SELECT * FROM agents WHERE tenant_id = (SELECT tenant_id FROM users LIMIT 1) ORDER BY {col} DESC, id DESC LIMIT 50 OFFSET 5000"
                ),
            ))
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get_by_index::<String>(3).unwrap())
            .collect();
        let text = plan.join(" | ");
        assert!(text.contains(index), "{col}: {text}");
        assert!(!text.contains("TEMP B-TREE"), "{col}: a sort step: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_request_changes_take_a_comment_and_only_for_those_who_may_decide() {
    let w = world().await;
    let app = &w.app;
    let path = format!("/deployments/{}", w.dep);
    // The requester and a Viewer: none of the three decision buttons.
    for cookie in [&w.dana, &w.viewer] {
        let p = get(app, &path, cookie).await;
        for id in ["approve", "reject", "request-changes"] {
            assert!(!p.html.contains(&format!("id=\"{id}\"")), "{id} shown");
        }
    }
    // A Viewer's forged post is refused by the role matrix, as a page.
    for action in ["reject", "request-changes"] {
        let p = post(
            app,
            &format!("{path}/{action}"),
            &w.viewer,
            &[("comment", "no")],
        )
        .await;
        assert_eq!(p.status, 403, "{action}");
        assert!(p.html.contains("Not allowed"));
    }
    // Sam may decide: all three buttons in one form that works without JS
    // (the other two post to their own address with `formaction`).
    let p = get(app, &path, &w.sam).await;
    assert!(p.html.contains("id=\"approve\""));
    assert!(
        p.html
            .contains(&format!("formaction=\"{path}/request-changes\""))
    );
    assert!(p.html.contains(&format!("formaction=\"{path}/reject\"")));
    // Without a comment: refused with the reason, nothing changed.
    let p = post(app, &format!("{path}/request-changes"), &w.sam, &[]).await;
    assert_eq!(p.status, 400);
    assert!(p.content_type.starts_with("text/html"));
    assert!(p.html.contains("needs a comment"), "{}", p.html);
    assert_eq!(dep_status(app, &w.dep).await, "pending_approval");
    // With one: sent back to the requester, the comment shown.
    let p = post(
        app,
        &format!("{path}/request-changes"),
        &w.sam,
        &[("comment", "Raise the threshold to 20.")],
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, path.as_str()));
    let p = get(app, &path, &w.dana).await;
    assert!(p.html.contains(">changes requested<"), "{}", p.html);
    assert!(p.html.contains("sam@acme.test</strong> requested changes"));
    assert!(p.html.contains("Raise the threshold to 20."));
    assert!(
        !p.html.contains("id=\"reject\""),
        "no decision left to take"
    );

    // A second request, rejected for good.
    let conn = app
        .scalar("SELECT id FROM siem_connections")
        .await
        .remove(0);
    let dep = app.deployment(&w.dana, &w.rule, &conn).await;
    let path = format!("/deployments/{dep}");
    let p = post(
        app,
        &format!("{path}/reject"),
        &w.sam,
        &[("comment", "Duplicate of the EDR rule.")],
    )
    .await;
    assert_eq!(p.status, 303);
    let p = get(app, &path, &w.sam).await;
    assert!(p.html.contains(">rejected<"));
    assert!(p.html.contains("sam@acme.test</strong> rejected"));
    assert_eq!(dep_status(app, &dep).await, "rejected");
    // Deciding again is refused, as a page.
    let p = post(app, &format!("{path}/approve"), &w.sam, &[]).await;
    assert_eq!(p.status, 409);
    assert!(p.html.contains("not awaiting approval"), "{}", p.html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakglass_is_flagged_everywhere_and_another_admin_signs_it_off() {
    let w = world().await;
    let app = &w.app;
    let conn = app
        .scalar("SELECT id FROM siem_connections")
        .await
        .remove(0);
    let a = app
        .post(
            "/v1/deployments/breakglass",
            Some(&w.admin),
            serde_json::json!({ "reason": "active incident, need it now", "connection_id": conn, "rule_id": w.rule, "version": 1 }),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.body["id"].as_str().unwrap().to_owned();
    let path = format!("/deployments/{id}");
    // Flagged on every list it appears in, with text.
    for list in ["/deployments", "/"] {
        let p = get(app, list, &w.admin).await;
        assert!(
            p.html.contains("data-breakglass>breakglass<") || p.html.contains("flag\">breakglass<"),
            "{list}: {}",
            p.html
        );
    }
    // The Admin who broke glass: the review is open, no sign-off button.
    let p = get(app, &path, &w.admin).await;
    assert!(p.html.contains("id=\"breakglass-review\""));
    assert!(p.html.contains("active incident, need it now"));
    assert!(p.html.contains(">review open<"));
    assert!(!p.html.contains("id=\"sign-off\""));
    let p = post(app, &format!("{path}/sign-off"), &w.admin, &[]).await;
    assert_eq!(p.status, 403);
    assert!(p.html.contains("another Admin must sign off"), "{}", p.html);
    // A User sees the flag and reason but cannot sign off.
    let p = get(app, &path, &w.sam).await;
    assert!(p.html.contains(">review open<"));
    assert!(!p.html.contains("id=\"sign-off\""));
    let p = post(app, &format!("{path}/sign-off"), &w.sam, &[]).await;
    assert_eq!(p.status, 403);
    // A second Admin signs it off from the page.
    let (_, root2) = app.user(&w.admin, "root2@acme.test", "admin", false).await;
    let p = get(app, "/", &root2).await;
    assert!(p.html.contains(&format!("{path}#breakglass-review")));
    let p = get(app, &path, &root2).await;
    assert!(p.html.contains("id=\"sign-off\""));
    let p = post(
        app,
        &format!("{path}/sign-off"),
        &root2,
        &[("comment", "Checked with the incident lead.")],
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, path.as_str()));
    let p = get(app, &path, &w.admin).await;
    assert!(p.html.contains(">review signed off<"));
    assert!(p.html.contains("root2@acme.test"));
    assert!(p.html.contains("Checked with the incident lead."));
    let p = get(app, "/", &root2).await;
    assert!(p.html.contains("No breakglass deployment waits for review"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_list_resolves_by_archive_or_redeploy() {
    use picket_server::db::entity::rule_deployment;
    let w = world().await;
    let app = &w.app;
    // Nothing deployed: the empty state says what to do.
    let p = get(app, "/drift", &w.viewer).await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("No rule is deployed yet"), "{}", p.html);
    // Two rules deployed and found drifted by a check (rows as the agent's
    // results leave them; the drift job itself is covered end to end).
    let conn: Uuid = app
        .scalar("SELECT id FROM siem_connections")
        .await
        .remove(0)
        .parse()
        .unwrap();
    let other = app.rule(&w.dana, "Password spray").await;
    let now = picket_server::time::unix_now();
    for rule in [&w.rule, &other] {
        use picket_server::db::entity::rule_version;
        use sea_orm::{ColumnTrait as _, QueryFilter as _};
        let rule: Uuid = rule.parse().unwrap();
        let v = rule_version::Entity::find()
            .filter(rule_version::Column::RuleId.eq(rule))
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        let (version_id, tenant) = (v.id, v.tenant_id);
        rule_deployment::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant),
            rule_id: Set(rule),
            connection_id: Set(conn),
            rule_version_id: Set(version_id),
            version: Set(1),
            monitoring: Set(false),
            enabled: Set(true),
            content_hash: Set(Some("a".repeat(64))),
            previous_version_id: Set(None),
            previous_version: Set(None),
            previous_monitoring: Set(false),
            previous_enabled: Set(false),
            state: Set("drift_detected".into()),
            drift_hash: Set(Some("b".repeat(64))),
            drift_checked_at: Set(Some(now)),
            remote_content: Set(None),
            last_deployment_id: Set(None),
            updated_at: Set(now),
        }
        .insert(&app.db)
        .await
        .unwrap();
    }
    // The rules list filters on it (and on SIEM and deployment status).
    let p = get(app, "/rules?status=drift", &w.viewer).await;
    assert!(p.html.contains("Brute force") && p.html.contains("Password spray"));
    let p = get(app, "/rules?status=pending_approval&siem=splunk", &w.viewer).await;
    assert!(p.html.contains("Brute force") && !p.html.contains("Password spray"));
    let p = get(app, "/rules?siem=sentinel", &w.viewer).await;
    assert!(
        p.html.contains("No rule matches these filters"),
        "{}",
        p.html
    );
    let p = get(app, "/drift", &w.viewer).await;
    assert!(p.html.contains(">2 drifted<"), "{}", p.html);
    assert!(p.html.contains("Your role cannot resolve drift."));
    assert!(
        !p.html.contains("value=\"archive\""),
        "viewer sees resolutions"
    );
    let p = get(app, "/", &w.sam).await;
    assert!(p.html.contains("id=\"drift-count\">2<"), "{}", p.html);
    let p = get(app, "/drift", &w.sam).await;
    assert!(p.html.contains("value=\"redeploy\"") && p.html.contains("value=\"archive\""));
    // A Viewer's forged resolution is refused.
    let conn_s = conn.to_string();
    let form = |res: &'static str| {
        [
            ("connection_id", conn_s.as_str()),
            ("resolution", res),
            ("message", "drifted in Splunk"),
        ]
    };
    let archive = form("archive");
    let p = post(
        app,
        &format!("/rules/{}/drift/resolve", w.rule),
        &w.viewer,
        &archive,
    )
    .await;
    assert_eq!(p.status, 403);
    // Archive: back to the list, that rule no longer tracked.
    let p = post(
        app,
        &format!("/rules/{}/drift/resolve", w.rule),
        &w.sam,
        &archive,
    )
    .await;
    assert_eq!((p.status, p.location.as_str()), (303, "/drift"));
    let p = get(app, "/drift", &w.sam).await;
    assert!(p.html.contains(">1 drifted<"), "{}", p.html);
    assert!(p.html.contains("archived (not tracked)"));
    // Archiving again: it is not drifted any more, refused as a page.
    let p = post(
        app,
        &format!("/rules/{}/drift/resolve", w.rule),
        &w.sam,
        &archive,
    )
    .await;
    assert_eq!(p.status, 409);
    assert!(p.html.contains("not drift_detected"), "{}", p.html);
    // Redeploy: a new request, awaiting approval, flagged as a redeploy.
    let redeploy = form("redeploy");
    let p = post(
        app,
        &format!("/rules/{other}/drift/resolve"),
        &w.sam,
        &redeploy,
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert!(p.location.starts_with("/deployments/"), "{}", p.location);
    let p = get(app, &p.location, &w.dana).await;
    assert!(p.html.contains(">awaiting approval<"));
    assert!(p.html.contains("flag\">redeploy<"), "{}", p.html);
    // Hostile input: an unknown resolution is a 400 page, not a panic.
    let p = post(
        app,
        &format!("/rules/{other}/drift/resolve"),
        &w.sam,
        &[("connection_id", "nope"), ("resolution", "explode")],
    )
    .await;
    assert_eq!(p.status, 400);
    assert!(p.content_type.starts_with("text/html"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_offered_only_for_what_is_live() {
    let w = world().await;
    let app = &w.app;
    let path = format!("/deployments/{}", w.dep);
    // Awaiting approval: nothing to roll back, and a forged post finds nothing deployed.
    let p = get(app, &path, &w.sam).await;
    assert!(!p.html.contains("id=\"rollback-form\""));
    let p = post(
        app,
        &format!("{path}/rollback"),
        &w.sam,
        &[("comment", "x")],
    )
    .await;
    assert_eq!(p.status, 404, "{}", p.html);
    assert!(p.content_type.starts_with("text/html"));
    // A Viewer may not request one.
    let p = post(app, &format!("{path}/rollback"), &w.viewer, &[]).await;
    assert_eq!(p.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_set_min_approvers_and_add_sentinel_and_elastic_connections() {
    let w = world().await;
    let app = &w.app;
    let p = get(app, "/settings", &w.admin).await;
    assert!(p.html.contains("id=\"min-approvers\""));
    assert!(p.html.contains("value=\"1\""));
    // Out of range and not a number: the page again with the message; unchanged.
    for bad in ["0", "11", "two"] {
        let p = post(
            app,
            "/settings/approvals",
            &w.admin,
            &[("min_approvers", bad)],
        )
        .await;
        assert_eq!(p.status, 400, "{bad}");
        assert!(p.html.contains("class=\"error\""), "{}", p.html);
    }
    assert_eq!(app.scalar("SELECT min_approvers FROM tenants").await, ["1"]);
    // A User may not change it.
    let p = post(
        app,
        "/settings/approvals",
        &w.sam,
        &[("min_approvers", "2")],
    )
    .await;
    assert_eq!(p.status, 403);
    let p = post(
        app,
        "/settings/approvals",
        &w.admin,
        &[("min_approvers", "2")],
    )
    .await;
    assert_eq!(p.status, 303);
    assert_eq!(app.scalar("SELECT min_approvers FROM tenants").await, ["2"]);
    // The request page now asks for two.
    let p = get(app, &format!("/deployments/{}", w.dep), &w.sam).await;
    assert!(p.html.contains("2 approval(s) needed"), "{}", p.html);
    assert!(p.html.contains("2 still needed"));
    // The test requirement: a ticked checkbox turns it on, an unticked one off.
    assert!(
        !get(app, "/settings", &w.admin)
            .await
            .html
            .contains("name=\"require_tests\" type=\"checkbox\" checked")
    );
    let p = post(
        app,
        "/settings/approvals",
        &w.admin,
        &[("min_approvers", "2"), ("require_tests", "on")],
    )
    .await;
    assert_eq!(p.status, 303);
    let on = app.scalar("SELECT require_tests FROM tenants").await;
    assert!(on == ["1"] || on == ["true"] || on == ["t"], "{on:?}");
    assert!(
        get(app, "/settings", &w.admin)
            .await
            .html
            .contains("name=\"require_tests\" type=\"checkbox\" checked")
    );
    // Dana's rule has no test cases: approval is blocked; only an Admin is
    // offered the written override, and approving without it is refused.
    let page = format!("/deployments/{}", w.dep);
    let p = get(app, &page, &w.admin).await;
    assert!(p.html.contains("approval blocked"), "{}", p.html);
    assert!(p.html.contains("no test cases"), "{}", p.html);
    assert!(p.html.contains("id=\"test-override\""), "{}", p.html);
    assert!(
        !get(app, &page, &w.sam)
            .await
            .html
            .contains("id=\"test-override\"")
    );
    let digest = p
        .html
        .split("name=\"digest\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let approve = format!("/deployments/{}/approve", w.dep);
    let p = post(app, &approve, &w.admin, &[("digest", digest.as_str())]).await;
    assert_eq!(p.status, 409, "{}", p.html);
    let p = post(
        app,
        &approve,
        &w.admin,
        &[
            ("digest", digest.as_str()),
            ("test_override", "tested by hand in staging"),
        ],
    )
    .await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(
        app.scalar("SELECT count(*) FROM audit_events WHERE action = 'deployment.test_override'")
            .await,
        ["1"]
    );
    let p = post(
        app,
        "/settings/approvals",
        &w.admin,
        &[("min_approvers", "2")],
    )
    .await;
    assert_eq!(p.status, 303);
    let off = app.scalar("SELECT require_tests FROM tenants").await;
    assert!(off == ["0"] || off == ["false"] || off == ["f"], "{off:?}");

    // Sentinel: ids are checked by the service; the secret is write-only.
    let mut sentinel = vec![
        ("name", "azure-prod"),
        ("agent_id", w.agent.as_str()),
        ("subscription_id", "not-a-guid"),
        ("resource_group", "rg-sec"),
        ("workspace_name", "law-sec"),
        ("workspace_id", "11111111-2222-3333-4444-555555555555"),
        ("tenant_id", "66666666-7777-8888-9999-000000000000"),
        ("client_id", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"),
        ("client_secret", "s3cr3t-value-never-shown"),
    ];
    let p = post(app, "/settings/connections/sentinel", &w.admin, &sentinel).await;
    assert_eq!(p.status, 400, "{}", p.html);
    assert!(
        p.html.contains("subscription_id must be a GUID"),
        "{}",
        p.html
    );
    sentinel[2] = ("subscription_id", "12345678-1234-1234-1234-123456789abc");
    let p = post(app, "/settings/connections/sentinel", &w.admin, &sentinel).await;
    assert_eq!(p.status, 303, "{}", p.html);
    let elastic = [
        ("name", "elastic-prod"),
        ("agent_id", w.agent.as_str()),
        ("base_url", "https://kibana.acme.test:5601"),
        ("elasticsearch_url", "https://es.acme.test:9200"),
        ("space", ""),
        ("test_index", ""),
        ("api_key", "ZWxhc3RpYy1rZXktbmV2ZXItc2hvd24="),
    ];
    let p = post(app, "/settings/connections/elastic", &w.admin, &elastic).await;
    assert_eq!(p.status, 303, "{}", p.html);
    let p = get(app, "/settings", &w.admin).await;
    assert!(p.html.contains("azure-prod") && p.html.contains("elastic-prod"));
    assert!(!p.html.contains("s3cr3t-value-never-shown"), "secret shown");
    assert!(
        !p.html.contains("ZWxhc3RpYy1rZXktbmV2ZXItc2hvd24="),
        "key shown"
    );
    assert_eq!(
        app.scalar("SELECT kind FROM siem_connections WHERE name = 'elastic-prod'")
            .await,
        ["elastic"]
    );
    // A User may not add one.
    let p = post(app, "/settings/connections/elastic", &w.sam, &elastic).await;
    assert_eq!(p.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_tests_are_edited_run_and_their_last_results_shown_per_case() {
    let w = world().await;
    let app = &w.app;
    let tests_ok = r#"[{"name": "alice", "expect": "match", "events": [{"user": "alice"}]},
{"name": "bob", "expect": "no_match", "events": [{"user": "bob"}]}]"#;
    let mut form = vec![
        ("title", "Failed logon for alice"),
        ("description", ""),
        ("severity", "high"),
        ("query", "index=main EventCode=4625 user=alice"),
        ("cron", "*/5 * * * *"),
        ("earliest", "-10m"),
        ("latest", "now"),
        (
            "tests",
            "[{\"name\": \"alice\",\n \"expect\": \"sometimes\"}]",
        ),
    ];
    // Not JSON of test cases: the message is at the tests field with its line.
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert_eq!(p.status, 400, "{}", p.html);
    assert!(p.html.contains("id=\"tests-error\""), "{}", p.html);
    assert!(p.html.contains("tests line 2, column"), "{}", p.html);
    assert!(p.html.contains("sometimes"), "what was typed stays");
    // Two cases with one name: the rule crate's finding, listed.
    form[7] = (
        "tests",
        r#"[{"name": "a", "expect": "match", "events": [{"user": "x"}]}, {"name": "a", "expect": "match", "events": [{"user": "y"}]}]"#,
    );
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert_eq!(p.status, 422, "{}", p.html);
    assert!(
        p.html.contains("another test is already named"),
        "{}",
        p.html
    );
    form[7] = ("tests", tests_ok);
    let p = post(app, "/rules/new", &w.sam, &form).await;
    assert_eq!(p.status, 303, "{}", p.html);
    let rule = p.location.clone();
    let p = get(app, &rule, &w.viewer).await;
    assert!(p.html.contains("id=\"tests\""));
    assert!(p.html.contains("Not run yet"), "{}", p.html);
    assert_eq!(p.html.matches(">not run<").count(), 2, "{}", p.html);
    assert!(
        !p.html.contains("id=\"run-tests\""),
        "a viewer may not run tests"
    );
    // The edit form carries the cases over as JSON.
    let p = get(app, &format!("{rule}/edit"), &w.sam).await;
    assert!(
        p.html.contains("alice") && p.html.contains("no_match"),
        "{}",
        p.html
    );

    // Running them: a queued run (the agent's job), then its results per case.
    let conn = app
        .scalar("SELECT id FROM siem_connections")
        .await
        .remove(0);
    let run = [("version", "1"), ("connection_id", conn.as_str())];
    let p = post(app, &format!("{rule}/test-runs"), &w.viewer, &run).await;
    assert_eq!(p.status, 403);
    let p = post(app, &format!("{rule}/test-runs"), &w.sam, &run).await;
    assert_eq!(p.status, 303, "{}", p.html);
    assert_eq!(p.location, format!("{rule}?b=1#tests"));
    let p = get(app, &rule, &w.sam).await;
    assert!(p.html.contains("id=\"run-status\">running<"), "{}", p.html);
    // The agent's report, as `rules::record_test_result` stores it (the
    // job itself runs end to end in tests/e2e: console_browser, rule_tests).
    app.exec(
        r#"UPDATE rule_test_runs SET status = 'failed', results = '[{"name":"alice","expect":"match","matched":1,"passed":true},{"name":"bob","expect":"no_match","matched":2,"passed":false}]'"#,
    )
    .await;
    let p = get(app, &rule, &w.sam).await;
    assert!(p.html.contains("id=\"run-status\">failed<"), "{}", p.html);
    assert_eq!(p.html.matches("data-case-result>passed<").count(), 1);
    assert_eq!(p.html.matches("data-case-result>failed<").count(), 1);
    // Hostile input: a version that does not exist is a 404 page.
    let p = post(
        app,
        &format!("{rule}/test-runs"),
        &w.sam,
        &[("version", "99"), ("connection_id", conn.as_str())],
    )
    .await;
    assert_eq!(p.status, 404);
    assert!(p.content_type.starts_with("text/html"));
}

/// A deployment's stored status (entity query: ids are stored natively on
/// both backends, so no SQL text comparison).
async fn dep_status(app: &TestApp, id: &str) -> String {
    use picket_server::db::entity::deployment;
    let id: Uuid = id.parse().unwrap();
    deployment::Entity::find_by_id(id)
        .one(&app.db)
        .await
        .unwrap()
        .unwrap()
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_page_shows_health_per_connection_with_text_not_colour_alone() {
    use picket_server::db::entity::{rule_deployment, rule_health_sample, rule_version};
    use sea_orm::{ColumnTrait as _, QueryFilter as _};
    let w = world().await;
    let app = &w.app;
    let page = format!("/rules/{}", w.rule);
    // Nothing deployed: the empty state says how health arrives.
    let p = get(app, &page, &w.viewer).await;
    assert_eq!(p.status, 200);
    assert!(p.html.contains("No health reported yet"), "{}", p.html);

    // The rule deployed and a rule_health result stored, as the job's
    // result leaves the rows (the job itself is covered end to end in
    // tests/e2e/tests/rule_health.rs).
    let conn: Uuid = app
        .scalar("SELECT id FROM siem_connections")
        .await
        .remove(0)
        .parse()
        .unwrap();
    let rule: Uuid = w.rule.parse().unwrap();
    let v = rule_version::Entity::find()
        .filter(rule_version::Column::RuleId.eq(rule))
        .one(&app.db)
        .await
        .unwrap()
        .unwrap();
    let now = picket_server::time::unix_now();
    rule_deployment::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(v.tenant_id),
        rule_id: Set(rule),
        connection_id: Set(conn),
        rule_version_id: Set(v.id),
        version: Set(1),
        monitoring: Set(false),
        enabled: Set(true),
        content_hash: Set(Some("a".repeat(64))),
        previous_version_id: Set(None),
        previous_version: Set(None),
        previous_monitoring: Set(false),
        previous_enabled: Set(false),
        state: Set("deployed".into()),
        drift_hash: Set(None),
        drift_checked_at: Set(None),
        remote_content: Set(None),
        last_deployment_id: Set(None),
        updated_at: Set(now),
    }
    .insert(&app.db)
    .await
    .unwrap();
    rule_health_sample::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(v.tenant_id),
        rule_id: Set(rule),
        connection_id: Set(conn),
        job_id: Set(Uuid::now_v7()),
        taken_at: Set(now),
        window_secs: Set(900),
        error_class: Set(None),
        runs_succeeded: Set(3),
        runs_failed: Set(1),
        runs_skipped: Set(2),
        results_total: Set(Some(7)),
        alerts_fired: Set(Some(2)),
        last_run_at: Set(Some(now - 60)),
        last_run_duration_ms: Set(Some(1500)),
        gap_ms: Set(None),
    }
    .insert(&app.db)
    .await
    .unwrap();
    let p = get(app, &page, &w.viewer).await;
    assert_eq!(p.status, 200);
    let row = p
        .html
        .split("data-health=\"prod-splunk\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no health row: {}", p.html))
        .to_owned();
    assert!(row.contains("failing runs"), "{row}");
    assert!(row.contains("3 / 1 / 2"), "{row}");
    assert!(row.contains("<td>7</td><td>2</td>"), "{row}");
    assert!(row.contains("1500 ms"), "{row}");
    assert!(row.contains("not reported"), "{row}");
    assert!(row.contains("(last 15 min)"), "{row}");
}
