//! Tenant isolation and the role matrix, over EVERY route of the API.
//!
//! The route list comes from the OpenAPI document the server serves
//! (`/v1/openapi.json`), and is checked against the routes registered in the
//! source of the router (`server/src/api/*.rs`, every `.route(...)` call): a
//! route missing from the document fails the test, as does a route missing
//! from this file's role table.
//!
//! 1. `every_route_with_another_tenants_ids_is_404_and_changes_nothing`: as
//!    tenant B's admin (then B's plain user), call each route with tenant A's
//!    ids (in the path, and in the body where a route takes ids there); every
//!    id-bearing route answers 404 (or 403 for an admin route and a non-admin),
//!    lists show nothing of A's, and A's rows are identical before and after.
//! 2. `role_matrix_over_every_route`: every route × Admin / User / Viewer /
//!    approver-Viewer / an API key with each single scope, against [`MATRIX`],
//!    which mirrors the table.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use picket_server::db::entity;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use serde_json::{Value, json};
use support::{TestApp, app};
use uuid::Uuid;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// No authentication (sign-in, registration, agent enrollment).
    Public,
    /// One's own account: every signed-in person, never an API key.
    Account,
    /// View dashboards/rules/deployments/connections: all roles; key scope `rules:read`.
    View,
    /// The fleet: all roles; key scope `agents:read`.
    ReadAgents,
    /// Create/edit rules: Admin, User; key scope `rules:write`.
    Author,
    /// Request deployments: Admin, User; key scope `deployments:request`.
    Request,
    /// Approve: Admin, User, flagged Viewer; key scope `deployments:approve`.
    Approve,
    /// Users, invitations, API keys, enrollment tokens, SIEM connections: Admin; no key.
    Admin,
    /// Read the audit log: Admin; key scope `audit:read`.
    ReadAudit,
}

/// The role matrix, route by route.
const MATRIX: &[(&str, &str, Need)] = &[
    ("POST", "/v1/auth/claim", Need::Public),
    ("POST", "/v1/auth/signup", Need::Public),
    ("POST", "/v1/auth/login", Need::Public),
    ("POST", "/v1/auth/accept-invitation", Need::Public),
    ("POST", "/v1/agent/enroll", Need::Public),
    ("POST", "/v1/auth/logout", Need::Account),
    ("GET", "/v1/me", Need::Account),
    ("POST", "/v1/me/password", Need::Account),
    ("GET", "/v1/me/sessions", Need::Account),
    ("POST", "/v1/me/sessions/{id}/revoke", Need::Account),
    ("POST", "/v1/users", Need::Admin),
    ("GET", "/v1/users", Need::Admin),
    ("POST", "/v1/users/{id}/role", Need::Admin),
    ("POST", "/v1/users/{id}/sessions/revoke", Need::Admin),
    ("POST", "/v1/invitations", Need::Admin),
    ("GET", "/v1/invitations", Need::Admin),
    ("POST", "/v1/invitations/{id}/revoke", Need::Admin),
    ("POST", "/v1/api-keys", Need::Admin),
    ("GET", "/v1/api-keys", Need::Admin),
    ("POST", "/v1/api-keys/{id}/revoke", Need::Admin),
    ("POST", "/v1/enrollment-tokens", Need::Admin),
    ("GET", "/v1/enrollment-tokens", Need::Admin),
    ("POST", "/v1/enrollment-tokens/{id}/revoke", Need::Admin),
    ("GET", "/v1/agents", Need::ReadAgents),
    ("GET", "/v1/agents/{id}", Need::ReadAgents),
    ("POST", "/v1/agents/{id}/revoke", Need::Admin),
    ("POST", "/v1/agents/{id}/rotate-keys", Need::Admin),
    ("GET", "/v1/audit/checkpoint", Need::ReadAudit),
    ("POST", "/v1/audit/checkpoint", Need::Admin),
    ("GET", "/v1/audit/events", Need::ReadAudit),
    ("GET", "/v1/audit/events/{index}/proof", Need::ReadAudit),
    ("GET", "/v1/audit/consistency", Need::ReadAudit),
    ("GET", "/v1/audit/export", Need::ReadAudit),
    ("POST", "/v1/connections", Need::Admin),
    ("GET", "/v1/connections", Need::View),
    ("GET", "/v1/connections/{id}", Need::View),
    ("PUT", "/v1/connections/{id}/credential", Need::Admin),
    ("PUT", "/v1/connections/{id}/hec", Need::Admin),
    ("POST", "/v1/rules", Need::Author),
    ("GET", "/v1/rules", Need::View),
    ("GET", "/v1/rules/{id}", Need::View),
    ("POST", "/v1/rules/{id}/versions", Need::Author),
    ("POST", "/v1/rules/import", Need::Author),
    ("GET", "/v1/rules/{id}/diff", Need::View),
    ("GET", "/v1/rules/{id}/export", Need::View),
    ("POST", "/v1/rules/{id}/test-runs", Need::Author),
    ("GET", "/v1/rules/{id}/test-runs", Need::View),
    ("POST", "/v1/deployments", Need::Request),
    ("GET", "/v1/deployments", Need::View),
    ("GET", "/v1/deployments/{id}", Need::View),
    ("POST", "/v1/deployments/{id}/approve", Need::Approve),
    ("PUT", "/v1/deployments/{id}", Need::Request),
    ("POST", "/v1/deployments/{id}/reject", Need::Approve),
    (
        "POST",
        "/v1/deployments/{id}/request-changes",
        Need::Approve,
    ),
    ("POST", "/v1/deployments/breakglass", Need::Admin),
    ("POST", "/v1/deployments/rollback", Need::Request),
    ("POST", "/v1/deployments/{id}/sign-off", Need::Admin),
    ("GET", "/v1/breakglass-reviews", Need::Admin),
    ("GET", "/v1/notifications", Need::Admin),
    ("GET", "/v1/approval-policy", Need::View),
    ("PUT", "/v1/approval-policy", Need::Admin),
    ("GET", "/v1/drift", Need::View),
    ("POST", "/v1/rules/{id}/drift/resolve", Need::Request),
    ("POST", "/v1/connections/{id}/drift-check", Need::Request),
    ("GET", "/v1/rules/{id}/health", Need::View),
    ("POST", "/v1/connections/{id}/rule-health", Need::Request),
    ("POST", "/v1/deployments/{id}/withdraw", Need::Request),
    ("POST", "/v1/deployments/{id}/preview", Need::Request),
];

/// Routes served outside the JSON API document, and why.
const NOT_IN_DOCUMENT: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "the load balancer's health check"),
    ("GET", "/readyz", "the load balancer's readiness check"),
    (
        "GET",
        "/metrics",
        "Prometheus scrape, its own bearer token (operations.md)",
    ),
    ("GET", "/v1/openapi.json", "the document itself"),
    (
        "GET",
        "/v1/agent/connect",
        "the agents' WebSocket, authenticated by signature (protocol.md)",
    ),
];

/// The web console's pages (HTML, session cookie only; not in the API
/// document). Each page takes the same `Auth` permission as the API; the
/// console tests (`tests/console.rs`) exercise who sees what.
const CONSOLE: &[(&str, &str, Need)] = &[
    ("GET", "/", Need::View),
    ("GET", "/login", Need::Public),
    ("POST", "/login", Need::Public),
    ("GET", "/claim", Need::Public),
    ("POST", "/claim", Need::Public),
    ("POST", "/logout", Need::Account),
    ("GET", "/invitation", Need::Public),
    ("POST", "/invitation", Need::Public),
    ("GET", "/account", Need::Account),
    ("POST", "/account/password", Need::Account),
    ("POST", "/account/sessions/{id}/revoke", Need::Account),
    ("GET", "/approvals", Need::View),
    ("GET", "/deployments", Need::View),
    ("GET", "/deployments/live", Need::View),
    ("GET", "/deployments/{id}", Need::View),
    ("POST", "/deployments/{id}/approve", Need::Approve),
    ("POST", "/deployments/{id}/reject", Need::Approve),
    ("POST", "/deployments/{id}/request-changes", Need::Approve),
    ("POST", "/deployments/{id}/rollback", Need::Request),
    ("POST", "/deployments/{id}/sign-off", Need::Admin),
    ("GET", "/drift", Need::View),
    ("POST", "/rules/{id}/drift/resolve", Need::Request),
    ("GET", "/rules", Need::View),
    ("GET", "/rules/new", Need::Author),
    ("POST", "/rules/new", Need::Author),
    ("GET", "/rules/{id}", Need::View),
    ("GET", "/rules/{id}/edit", Need::Author),
    ("POST", "/rules/{id}/edit", Need::Author),
    ("POST", "/rules/{id}/deploy", Need::Request),
    ("POST", "/rules/{id}/test-runs", Need::Author),
    ("GET", "/fleet", Need::ReadAgents),
    ("GET", "/fleet/{id}", Need::ReadAgents),
    ("GET", "/audit", Need::ReadAudit),
    ("GET", "/settings", Need::Admin),
    ("POST", "/settings/users/{id}/role", Need::Admin),
    ("POST", "/settings/invitations", Need::Admin),
    ("POST", "/settings/api-keys", Need::Admin),
    ("POST", "/settings/api-keys/{id}/revoke", Need::Admin),
    ("POST", "/settings/enrollment-tokens", Need::Admin),
    ("POST", "/settings/connections", Need::Admin),
    ("POST", "/settings/approvals", Need::Admin),
    ("POST", "/settings/connections/sentinel", Need::Admin),
    ("POST", "/settings/connections/elastic", Need::Admin),
    ("GET", "/static/console.css", Need::Public),
    ("GET", "/static/console.js", Need::Public),
];

/// Every `.route("PATH", get(..).post(..))` in the API router's source.
fn source_routes() -> BTreeSet<(String, String)> {
    routes_in(concat!(env!("CARGO_MANIFEST_DIR"), "/src/api"))
}

/// Every `.route(..)` in the source files of `dir`.
fn routes_in(dir: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut from = 0;
        while let Some(p) = text[from..].find(".route(") {
            let start = from + p + ".route(".len();
            let mut depth = 1;
            let mut end = start;
            for (i, c) in text[start..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = start + i;
                    break;
                }
            }
            let inner = &text[start..end];
            let q1 = inner.find('"').unwrap();
            let q2 = q1 + 1 + inner[q1 + 1..].find('"').unwrap();
            let path = &inner[q1 + 1..q2];
            let rest = &inner[q2 + 1..];
            for m in ["get", "post", "put", "delete", "patch"] {
                let pat = format!("{m}(");
                let mut k = 0;
                while let Some(f) = rest[k..].find(&pat) {
                    let at = k + f;
                    let prev = rest[..at].chars().last().unwrap_or(' ');
                    if !(prev.is_alphanumeric() || prev == '_' || prev == ':') {
                        out.insert((m.to_uppercase(), path.to_owned()));
                    }
                    k = at + pat.len();
                }
            }
            from = end;
        }
    }
    out
}

/// Every (method, path) of the served OpenAPI document, checked against the source.
async fn documented_routes(s: &TestApp) -> Vec<(String, String)> {
    let doc = s.send("GET", "/v1/openapi.json", None, None, &[]).await;
    assert_eq!(doc.status, 200);
    let mut documented = BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "delete", "patch"] {
            if item.get(m).is_some() {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let mut served = source_routes();
    assert!(
        served.len() > 30,
        "the source scan found too few routes: {served:?}"
    );
    for (m, p, _) in NOT_IN_DOCUMENT {
        assert!(
            served.remove(&((*m).to_owned(), (*p).to_owned())),
            "{m} {p} is no longer served"
        );
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /v1/openapi.json: {undocumented:?}"
    );
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
    let table: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = documented.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "routes missing from MATRIX in this test (add them with who may call them): {missing:?}"
    );
    let extra: Vec<_> = table.difference(&documented).collect();
    assert!(
        extra.is_empty(),
        "MATRIX names routes that do not exist: {extra:?}"
    );
    // Sign-out last: it ends the caller's session.
    let mut v: Vec<_> = documented.into_iter().collect();
    v.sort_by_key(|(m, p)| (p == "/v1/auth/logout", m.clone(), p.clone()));
    v
}

/// Tenant A's objects: one of each kind a route can name.
struct TenantA {
    tenant: Uuid,
    admin_email: String,
    viewer: String,
    session_id: String,
    invitation: String,
    api_key: String,
    token: String,
    agent: String,
    connection: String,
    rule: String,
    deployment: String,
}

impl TenantA {
    fn id_for(&self, path: &str) -> String {
        let pick = [
            ("/v1/users/", &self.viewer),
            ("/v1/me/sessions/", &self.session_id),
            ("/v1/invitations/", &self.invitation),
            ("/v1/api-keys/", &self.api_key),
            ("/v1/enrollment-tokens/", &self.token),
            ("/v1/agents/", &self.agent),
            ("/v1/connections/", &self.connection),
            ("/v1/rules/", &self.rule),
            ("/v1/deployments/", &self.deployment),
        ];
        pick.iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map(|(_, id)| (*id).clone())
            .unwrap_or_else(|| panic!("no id of tenant A for {path}: add one to TenantA"))
    }

    fn ids(&self) -> Vec<&str> {
        vec![
            &self.viewer,
            &self.invitation,
            &self.api_key,
            &self.token,
            &self.agent,
            &self.connection,
            &self.rule,
            &self.deployment,
            &self.admin_email,
        ]
    }

    /// A body for the route: valid where the route takes ids (naming A's), else `{}`.
    fn body_for(&self, method: &str, path: &str) -> Option<Value> {
        if method == "GET" {
            return None;
        }
        Some(match path {
            "/v1/rules/{id}/versions" => support::rule_body("Stolen"),
            "/v1/rules/{id}/test-runs" => {
                json!({ "version": 1, "connection_id": self.connection })
            }
            "/v1/deployments" => support::deployment_body(&self.rule, &self.connection),
            "/v1/connections" => {
                json!({ "name": "stolen", "kind": "splunk", "agent_id": self.agent, "base_url": "https://evil.test:8089", "token": "t" })
            }
            "/v1/connections/{id}/credential" => json!({ "token": "stolen" }),
            "/v1/connections/{id}/hec" => {
                json!({ "url": "https://evil.test:8088", "test_index": "stolen", "token": "t" })
            }
            "/v1/users/{id}/role" => json!({ "role": "admin", "approver": true }),
            _ => json!({}),
        })
    }
}

/// Everything tenant A owns, as text, to compare before and after.
async fn snapshot(s: &TestApp, t: Uuid) -> String {
    let db = &s.db;
    macro_rules! rows {
        ($($m:ident),*) => {{
            let mut out = String::new();
            $(
                let r = entity::$m::Entity::find()
                    .filter(entity::$m::Column::TenantId.eq(t))
                    .all(db)
                    .await
                    .unwrap();
                assert!(!r.is_empty() || stringify!($m) == "approval" || stringify!($m) == "job", "tenant A has no {}", stringify!($m));
                out.push_str(&format!("{}: {r:?}\n", stringify!($m)));
            )*
            out
        }};
    }
    let mut out = rows!(
        user,
        session,
        invitation,
        api_key,
        enrollment_token,
        agent,
        siem_connection,
        rule,
        rule_version,
        deployment,
        approval,
        job
    );
    let tenant = entity::tenant::Entity::find_by_id(t).one(db).await.unwrap();
    out.push_str(&format!("tenant: {tenant:?}\n"));
    out
}

async fn tenant_a(s: &TestApp) -> (TenantA, String) {
    let admin = s
        .register("/v1/auth/signup", "Tenant A", "admin@a.test")
        .await;
    let (viewer, _) = s.user(&admin, "viewer@a.test", "viewer", false).await;
    let (_, author) = s.user(&admin, "author@a.test", "user", false).await;
    let inv = s
        .post(
            "/v1/invitations",
            Some(&admin),
            json!({ "email": "new@a.test", "role": "user" }),
        )
        .await;
    let (api_key, _) = s.api_key(&admin, &["rules:read"]).await;
    let agent = s.agent(&admin).await;
    let tok = s
        .post("/v1/enrollment-tokens", Some(&admin), json!({}))
        .await;
    let connection = s.connection(&admin, &agent, "splunk-a").await;
    let rule = s.rule(&author, "A's rule").await;
    let deployment = s.deployment(&admin, &rule, &connection).await;
    let tenant: Uuid = s.get("/v1/me", &admin).await.body["tenant_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (
        TenantA {
            tenant,
            admin_email: "admin@a.test".into(),
            viewer,
            session_id: picket_server::auth::secret_id(&author),
            invitation: inv.body["id"].as_str().unwrap().to_owned(),
            api_key,
            token: tok.body["id"].as_str().unwrap().to_owned(),
            agent,
            connection,
            rule,
            deployment,
        },
        admin,
    )
}

#[tokio::test]
async fn every_route_with_another_tenants_ids_is_404_and_changes_nothing() {
    let s = app().with_env("PICKET_MODE", "saas").start().await;
    let (a, _a_admin) = tenant_a(&s).await;
    let b_admin = s
        .register("/v1/auth/signup", "Tenant B", "admin@b.test")
        .await;
    let (_, b_user) = s.user(&b_admin, "user@b.test", "user", false).await;
    let routes = documented_routes(&s).await;
    let before = snapshot(&s, a.tenant).await;

    let mut checked = 0;
    // B's user first, then B's admin (each signs out last, with its own session).
    for (who, token) in [("B's user", &b_user), ("B's admin", &b_admin)] {
        for (method, path) in &routes {
            let need = MATRIX
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .map(|(_, _, n)| *n)
                .unwrap();
            // An audit index is per tenant: B's index 0 is B's own event.
            let concrete = if path.contains("{id}") {
                path.replace("{id}", &a.id_for(path))
            } else {
                path.replace("{index}", "0")
            };
            let body = a.body_for(method, path);
            let ans = s.send(method, &concrete, Some(token), body, &[]).await;
            let what = format!("{who}: {method} {concrete} -> {} {}", ans.status, ans.text);
            let admin_only_and_not_admin =
                matches!(need, Need::Admin | Need::ReadAudit) && *who == *"B's user";
            if path.contains("{id}") || (path == "/v1/deployments" && method == "POST") {
                // The id is tenant A's: it does not exist for B.
                if admin_only_and_not_admin {
                    assert_eq!(ans.status, 403, "{what}");
                } else {
                    assert_eq!(ans.status, 404, "{what}");
                    assert_eq!(ans.body["error"]["code"], "not_found", "{what}");
                }
            } else if path == "/v1/connections" && method == "POST" {
                // A's agent named in the body: refused like an unknown agent.
                let code = ans.body["error"]["code"].as_str().unwrap_or_default();
                assert!(
                    (ans.status == 400 && code == "unknown_agent")
                        || (admin_only_and_not_admin && ans.status == 403),
                    "{what}"
                );
            } else {
                // No id to steal: whatever it answers, it shows nothing of A's.
                for id in a.ids() {
                    assert!(!ans.text.contains(id), "{what} leaks {id}");
                }
                assert!(ans.status < 500, "{what}");
            }
            checked += 1;
        }
        assert_eq!(
            snapshot(&s, a.tenant).await,
            before,
            "tenant A changed after {who}'s calls"
        );
    }
    assert_eq!(checked, routes.len() * 2);
}

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Principal {
    Admin,
    User,
    Viewer,
    ApproverViewer,
    Key(&'static str),
}

fn allows(p: Principal, need: Need) -> bool {
    use Need::*;
    match p {
        Principal::Key(scope) => match need {
            Public => true,
            View => scope == "rules:read",
            ReadAgents => scope == "agents:read",
            Author => scope == "rules:write",
            Request => scope == "deployments:request",
            Approve => scope == "deployments:approve",
            ReadAudit => scope == "audit:read",
            Account | Admin => false,
        },
        Principal::Admin => true,
        Principal::User => !matches!(need, Admin | ReadAudit),
        Principal::Viewer => matches!(need, Public | Account | View | ReadAgents),
        Principal::ApproverViewer => matches!(need, Public | Account | View | ReadAgents | Approve),
    }
}

#[tokio::test]
async fn role_matrix_over_every_route() {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let routes = documented_routes(&s).await;
    let mut principals: Vec<(Principal, String)> = Vec::new();
    for (p, email, role, approver) in [
        (Principal::User, "user@acme.test", "user", false),
        (Principal::Viewer, "viewer@acme.test", "viewer", false),
        (
            Principal::ApproverViewer,
            "approver@acme.test",
            "viewer",
            true,
        ),
    ] {
        let (_, t) = s.user(&admin, email, role, approver).await;
        principals.push((p, t));
    }
    for scope in [
        "rules:read",
        "rules:write",
        "deployments:request",
        "deployments:approve",
        "agents:read",
        "audit:read",
    ] {
        let (_, k) = s.api_key(&admin, &[scope]).await;
        principals.push((Principal::Key(scope), k));
    }
    // The admin last: its sign-out ends the session the keys were made with.
    principals.push((Principal::Admin, admin));

    let mut cells = 0;
    for (p, token) in &principals {
        for (method, path) in &routes {
            let need = MATRIX
                .iter()
                .find(|(m, pp, _)| m == method && pp == path)
                .map(|(_, _, n)| *n)
                .unwrap();
            // Ids that exist nowhere: an allowed call gets past authorization
            // and finds nothing (404) or a bad body (400); a denied one is 403.
            let concrete = path
                .replace(
                    "/v1/me/sessions/{id}",
                    &format!("/v1/me/sessions/{}", "0".repeat(64)),
                )
                .replace("{id}", &Uuid::new_v4().to_string())
                .replace("{index}", "0");
            let body = (method != "GET").then(|| json!({}));
            let ans = s.send(method, &concrete, Some(token), body, &[]).await;
            let what = format!(
                "{p:?} {method} {path} ({need:?}) -> {} {}",
                ans.status, ans.text
            );
            if allows(*p, need) {
                assert!(
                    ans.status != 401 && ans.status != 403,
                    "should be allowed: {what}"
                );
                assert!(ans.status < 500, "{what}");
            } else {
                assert_eq!(ans.status, 403, "should be denied: {what}");
            }
            cells += 1;
        }
    }
    assert_eq!(cells, routes.len() * principals.len());
}

#[test]
fn every_console_route_is_listed_with_who_may_call_it() {
    let served = routes_in(concat!(env!("CARGO_MANIFEST_DIR"), "/src/console"));
    let table: BTreeSet<(String, String)> = CONSOLE
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = served.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "console routes missing from CONSOLE in this test: {missing:?}"
    );
    let extra: Vec<_> = table.difference(&served).collect();
    assert!(
        extra.is_empty(),
        "CONSOLE names routes that do not exist: {extra:?}"
    );
    // The console's permissions are the API's: no page is looser than the
    // API route that does the same thing.
    let need = |m: &str, p: &str| {
        CONSOLE
            .iter()
            .find(|(cm, cp, _)| *cm == m && *cp == p)
            .map(|(_, _, n)| *n)
    };
    assert_eq!(
        need("POST", "/deployments/{id}/approve"),
        Some(Need::Approve)
    );
    assert_eq!(need("GET", "/audit"), Some(Need::ReadAudit));
    assert_eq!(need("GET", "/settings"), Some(Need::Admin));
}
