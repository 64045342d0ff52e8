//! The audit log (filters, latest signed checkpoint and its verification,
//! export) and the tenant settings (users and invitations, roles and the
//! approver flag, API keys, enrollment tokens, SIEM connections).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use uuid::Uuid;

use super::views::{self, Badge};
use super::{
    Chrome, Page, PageForm, PagePath, PageQuery, PageResult, encode_query, ok, render, see_other,
};
use crate::AppState;
use crate::audit::{checkpoint, query, verify};
use crate::auth::{CurrentUser, Role, Scope, perm};
use crate::error::ApiError;
use crate::service::console as q;
use crate::service::{accounts, api_keys, connections, deployments, enrollment, invitations};
use crate::time::unix_now;

struct EventRow {
    index: i64,
    when: String,
    actor: String,
    action: String,
    resource: String,
    badge: Badge,
    details: String,
}

struct CheckpointInfo {
    size: i64,
    root: String,
    signed: String,
    note: String,
    verified: bool,
    report: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<EventRow>,
    checkpoint: Option<CheckpointInfo>,
    f: AuditParams,
    next: Option<String>,
    export_query: String,
}

/// Filters of the audit page (the API's, as form fields).
#[derive(Deserialize, Default, Clone)]
pub struct AuditParams {
    #[serde(default)]
    actor_type: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    resource_type: String,
    #[serde(default)]
    outcome: String,
    /// `YYYY-MM-DD` (from the start of that day, UTC).
    #[serde(default)]
    since: String,
    /// `YYYY-MM-DD` (to the end of that day, UTC).
    #[serde(default)]
    until: String,
    after: Option<i64>,
}

/// Rows per audit page.
const AUDIT_PAGE: u64 = 50;

fn day(name: &str, v: &str) -> Result<Option<i64>, ApiError> {
    if v.is_empty() {
        return Ok(None);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(v, &fmt)
        .map(|d| Some(d.midnight().assume_utc().unix_timestamp()))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{name}: expected a date such as 2026-11-23"),
            )
        })
}

fn opt(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

/// `GET /audit`.
pub async fn audit(
    State(state): State<AppState>,
    user: Page<perm::ReadAudit>,
    PageQuery(p): PageQuery<AuditParams>,
) -> PageResult {
    for (name, v) in [
        ("actor_type", &p.actor_type),
        ("action", &p.action),
        ("resource_type", &p.resource_type),
    ] {
        if v.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("{name}: at most 200 bytes"),
            )
            .into());
        }
    }
    if !matches!(p.outcome.as_str(), "" | "success" | "failure" | "denied") {
        return Err(ApiError::bad_request(
            "invalid_query",
            "outcome: expected success, failure or denied",
        )
        .into());
    }
    let since = day("since", &p.since)?;
    let until = day("until", &p.until)?.map(|t| t + 86_400);
    let filter = query::Filter {
        actor_type: opt(&p.actor_type),
        actor_id: None,
        action: opt(&p.action),
        resource_type: opt(&p.resource_type),
        resource_id: None,
        outcome: opt(&p.outcome),
        since,
        until,
        after: p.after,
        limit: AUDIT_PAGE,
    };
    let log = user.tenant_id.to_string();
    let events = query::list(&state.db, &log, &filter).await?;
    let next = (events.len() as u64 == AUDIT_PAGE)
        .then(|| events.last().map(|e| e.idx))
        .flatten()
        .map(|after| {
            format!(
                "/audit?actor_type={}&action={}&resource_type={}&outcome={}&since={}&until={}&after={after}",
                encode_query(&p.actor_type),
                encode_query(&p.action),
                encode_query(&p.resource_type),
                encode_query(&p.outcome),
                encode_query(&p.since),
                encode_query(&p.until)
            )
        });
    let emails = q::user_emails(&state.db, user.scope()).await?;
    let rows = events
        .into_iter()
        .map(|m| {
            let ev: serde_json::Value = serde_json::from_str(&m.canonical).unwrap_or_default();
            let actor_id = ev["actor"]["id"].as_str().unwrap_or_default().to_owned();
            let actor_type = ev["actor"]["type"].as_str().unwrap_or_default().to_owned();
            let actor = Uuid::parse_str(&actor_id)
                .ok()
                .and_then(|id| emails.get(&id).cloned())
                .map_or_else(
                    || format!("{actor_type} {actor_id}").trim().to_owned(),
                    |e| format!("{e} ({actor_type})"),
                );
            let details = ev["details"].to_string();
            EventRow {
                index: m.idx,
                when: views::when(m.at),
                actor,
                action: ev["action"].as_str().unwrap_or_default().to_owned(),
                resource: format!(
                    "{} {}",
                    ev["resource"]["type"].as_str().unwrap_or_default(),
                    ev["resource"]["id"].as_str().unwrap_or_default()
                ),
                badge: views::outcome_badge(ev["outcome"].as_str().unwrap_or_default()),
                details: if details == "{}" || details == "null" {
                    String::new()
                } else {
                    details.chars().take(300).collect()
                },
            }
        })
        .collect();
    let checkpoint = match checkpoint::latest(&state.db, &log).await? {
        Some(c) => {
            // Recomputes the tree from the stored events and checks every
            // checkpoint's root and signature (what `admin audit verify` does).
            let reports = verify::verify_all(&state.db, Some(&log))
                .await
                .map_err(ApiError::Internal)?;
            let verified = !reports.is_empty() && reports.iter().all(verify::LogReport::ok);
            let report = reports
                .iter()
                .map(|r| {
                    if r.ok() {
                        format!(
                            "{} events, {} checkpoints, {} events covered by a signed checkpoint: consistent",
                            r.events, r.checkpoints, r.checkpointed
                        )
                    } else {
                        r.problems.join("; ")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            use base64::Engine as _;
            Some(CheckpointInfo {
                size: c.size,
                root: base64::engine::general_purpose::STANDARD.encode(&c.root),
                signed: views::when(c.created_at),
                note: c.note,
                verified,
                report,
            })
        }
        None => None,
    };
    // The export takes RFC 3339 times (the same whole days as the filter);
    // an absent bound is left out, not sent empty.
    let mut export_query = String::new();
    for (name, d, time) in [
        ("since", &p.since, "00:00:00"),
        ("until", &p.until, "23:59:59"),
    ] {
        if !d.is_empty() {
            export_query.push_str(&format!(
                "&{name}={}",
                encode_query(&format!("{d}T{time}Z"))
            ));
        }
    }
    ok(&AuditPage {
        chrome: Chrome::of(&user, "Audit log", "audit"),
        rows,
        checkpoint,
        f: p,
        next,
        export_query,
    })
}

struct UserRow {
    id: Uuid,
    email: String,
    role: String,
    approver: bool,
    me: bool,
}

struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    scopes: String,
    expires: String,
    last_used: String,
    revoked: bool,
}

struct TokenRow {
    label: String,
    uses: String,
    expires: String,
    state: Badge,
}

struct ConnRow {
    name: String,
    kind: String,
    base_url: String,
    agent: String,
}

/// Something shown once right after it was created.
pub struct Secret {
    /// What it is.
    what: &'static str,
    /// The secret text.
    text: String,
    /// Commands that use it (enrollment tokens).
    commands: Vec<(&'static str, String)>,
}

#[derive(Template)]
#[template(path = "console/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    invitations: Vec<(String, String, String, Badge)>,
    keys: Vec<KeyRow>,
    tokens: Vec<TokenRow>,
    conns: Vec<ConnRow>,
    agents: Vec<(Uuid, String)>,
    min_approvers: i32,
    /// The tenant requires test cases on every deployed version.
    require_tests: bool,
    secret: Option<Secret>,
    error: Option<String>,
    notice: Option<&'static str>,
    scopes: Vec<&'static str>,
}

/// `?done=` after a settings action.
#[derive(Deserialize, Default)]
pub struct DoneQuery {
    done: Option<String>,
}

async fn settings_page(
    state: &AppState,
    admin: &CurrentUser,
    secret: Option<Secret>,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Result<SettingsPage, ApiError> {
    let now = unix_now();
    let scope = admin.scope();
    let users = accounts::list_users(&state.db, scope)
        .await?
        .into_iter()
        .map(|u| UserRow {
            me: u.id == admin.id,
            id: u.id,
            email: u.email,
            role: u.role,
            approver: u.approver,
        })
        .collect();
    let invitations = invitations::list(&state.db, admin)
        .await?
        .into_iter()
        .take(50)
        .map(|i| {
            let state = if i.accepted_at.is_some() {
                Badge {
                    label: "accepted",
                    class: "ok",
                }
            } else if i.revoked_at.is_some() {
                Badge {
                    label: "revoked",
                    class: "muted",
                }
            } else if i.expires_at <= now {
                Badge {
                    label: "expired",
                    class: "muted",
                }
            } else {
                Badge {
                    label: "pending",
                    class: "warn",
                }
            };
            (i.email, i.role, views::when(i.expires_at), state)
        })
        .collect();
    let keys = api_keys::list(&state.db, admin)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes,
            expires: views::when(k.expires_at),
            last_used: k
                .last_used_at
                .map_or_else(|| "never".to_owned(), |t| views::ago(now, t)),
            revoked: k.revoked_at.is_some() || k.expires_at <= now,
        })
        .collect();
    let tokens = enrollment::list_tokens(&state.db, admin.tenant_id)
        .await?
        .into_iter()
        .take(50)
        .map(|t| TokenRow {
            label: t.label.unwrap_or_default(),
            uses: format!("{} of {}", t.uses, t.max_uses),
            expires: views::when(t.expires_at),
            state: if t.revoked_at.is_some() {
                Badge {
                    label: "revoked",
                    class: "muted",
                }
            } else if t.uses >= t.max_uses {
                Badge {
                    label: "used",
                    class: "muted",
                }
            } else if t.expires_at <= now {
                Badge {
                    label: "expired",
                    class: "muted",
                }
            } else {
                Badge {
                    label: "usable",
                    class: "ok",
                }
            },
        })
        .collect();
    let agents_page =
        q::fleet_page(&state.db, &state.registry, scope, &q::FleetQuery::default()).await?;
    let agents: Vec<(Uuid, String)> = agents_page
        .rows
        .iter()
        .filter(|(a, _)| a.revoked_at.is_none())
        .map(|(a, _)| (a.id, a.hostname.clone()))
        .collect();
    let conns = connections::list(&state.db, admin.tenant_id)
        .await?
        .into_iter()
        .map(|c| ConnRow {
            agent: agents
                .iter()
                .find(|(id, _)| *id == c.agent_id)
                .map_or_else(|| c.agent_id.to_string(), |(_, h)| h.clone()),
            name: c.name,
            kind: c.kind,
            base_url: c.base_url,
        })
        .collect();
    let t = q::tenant(&state.db, scope).await?;
    Ok(SettingsPage {
        chrome: Chrome::of(admin, "Settings", "settings"),
        users,
        invitations,
        keys,
        tokens,
        conns,
        agents,
        min_approvers: t.min_approvers,
        require_tests: t.require_tests,
        secret,
        error,
        notice,
        scopes: Scope::ALL.iter().map(|s| s.as_str()).collect(),
    })
}

/// `GET /settings` (admins).
pub async fn settings(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageQuery(d): PageQuery<DoneQuery>,
) -> PageResult {
    let notice = match d.done.as_deref() {
        Some("role") => Some("Role saved. It applies from the person's next sign-in."),
        Some("key") => Some("API key revoked."),
        Some("connection") => Some("SIEM connection added."),
        Some("approvals") => {
            Some("Approvals needed saved. It applies to requests approved from now on.")
        }
        _ => None,
    };
    ok(&settings_page(&state, &admin, None, None, notice).await?)
}

/// A settings action refused with a message: the page again, with it.
async fn settings_error(state: &AppState, admin: &CurrentUser, e: ApiError) -> PageResult {
    let (status, message) = match e {
        ApiError::BadRequest { message, .. } => (StatusCode::BAD_REQUEST, message),
        ApiError::Conflict { message, .. } => (StatusCode::CONFLICT, message),
        e => return Err(e.into()),
    };
    let page = settings_page(state, admin, None, Some(message), None).await?;
    Ok(render(status, &page))
}

/// The role form's fields.
#[derive(Deserialize)]
pub struct RoleForm {
    role: String,
    approver: Option<String>,
}

/// `POST /settings/users/{id}/role`.
pub async fn set_role(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PagePath(id): PagePath<Uuid>,
    PageForm(f): PageForm<RoleForm>,
) -> PageResult {
    let role = Role::parse(&f.role).ok_or_else(|| {
        ApiError::bad_request("invalid_field", "role must be admin, user or viewer")
    })?;
    match accounts::set_role(&state.db, &admin, id, role, f.approver.is_some()).await {
        Ok(_) => Ok(see_other("/settings?done=role#users")),
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// The invitation form's fields.
#[derive(Deserialize)]
pub struct InviteForm {
    email: String,
    role: String,
    approver: Option<String>,
}

/// `POST /settings/invitations`: shows the invitation link once.
pub async fn invite(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageForm(f): PageForm<InviteForm>,
) -> PageResult {
    let role = Role::parse(&f.role).ok_or_else(|| {
        ApiError::bad_request("invalid_field", "role must be admin, user or viewer")
    })?;
    match invitations::create(
        &state.db,
        &admin,
        &f.email,
        role,
        f.approver.is_some(),
        None,
    )
    .await
    {
        Ok((_, secret)) => {
            let link = format!(
                "{}/invitation?token={}",
                state.config.public_url.trim_end_matches('/'),
                encode_query(&secret)
            );
            let s = Secret {
                what: "Invitation link (send it to the person; it works once, for 7 days)",
                text: link,
                commands: Vec::new(),
            };
            ok(&settings_page(&state, &admin, Some(s), None, None).await?)
        }
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// `POST /settings/api-keys`: shows the key once. The form's `scope` field
/// repeats, so the body is read as pairs (`serde_urlencoded` has no sequences).
pub async fn create_api_key(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    body: axum::body::Bytes,
) -> PageResult {
    let mut name = String::new();
    let mut scopes = Vec::new();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::bad_request("invalid_form", format!("invalid form: {e}")))?;
    for (k, v) in pairs {
        match k.as_str() {
            "name" => name = v,
            "scope" => scopes.push(Scope::parse(&v).ok_or_else(|| {
                ApiError::bad_request("invalid_field", format!("unknown scope {v:?}"))
            })?),
            _ => {}
        }
    }
    match api_keys::create(&state.db, &admin, &name, &scopes, None).await {
        Ok((_, text)) => {
            let s = Secret {
                what: "API key (shown once: copy it now; only its hash is stored)",
                text,
                commands: Vec::new(),
            };
            ok(&settings_page(&state, &admin, Some(s), None, None).await?)
        }
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// `POST /settings/api-keys/{id}/revoke`.
pub async fn revoke_api_key(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PagePath(id): PagePath<Uuid>,
) -> PageResult {
    match api_keys::revoke(&state.db, &admin, id).await {
        Ok(()) => Ok(see_other("/settings?done=key#api-keys")),
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// The enrollment token form's fields.
#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    label: String,
    max_uses: Option<i32>,
}

/// `POST /settings/enrollment-tokens`: shows the token once, with
/// ready-to-paste install commands for Debian/Ubuntu and Windows.
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageForm(f): PageForm<TokenForm>,
) -> PageResult {
    let new = enrollment::NewToken {
        label: opt(f.label.trim()),
        ttl_secs: None,
        max_uses: f.max_uses,
    };
    match enrollment::create_token(&state, admin.tenant_id, admin.id, new).await {
        Ok((_, token)) => {
            let url = state.config.public_url.trim_end_matches('/').to_owned();
            let deb = format!(
                "sudo apt install ./picket-agent_0.1.0-1_amd64.deb\n\
                 printf '%s' '{token}' | sudo -u picket-agent picket-agent enroll --server {url} --token-file -\n\
                 sudo systemctl enable --now picket-agent"
            );
            let msi = format!(
                "echo {token}> %TEMP%\\picket-token.txt\r\n\
                 msiexec /i picket-agent-0.1.0-x64.msi /qn SERVER_URL={url} ENROLL_TOKEN_FILE=%TEMP%\\picket-token.txt\r\n\
                 del %TEMP%\\picket-token.txt"
            );
            let s = Secret {
                what: "Enrollment token (shown once; it is single-use unless you allowed more uses)",
                text: token,
                commands: vec![
                    ("Debian or Ubuntu (.deb, systemd)", deb),
                    ("Windows (.msi, elevated command prompt)", msi),
                ],
            };
            ok(&settings_page(&state, &admin, Some(s), None, None).await?)
        }
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// The Splunk connection form's fields (the token is write-only).
#[derive(Deserialize)]
pub struct ConnectionForm {
    name: String,
    agent_id: Uuid,
    base_url: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    owner: String,
    token: String,
}

/// `POST /settings/connections`: a Splunk connection (Sentinel and Elastic
/// connections are created with the API).
pub async fn create_connection(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageForm(f): PageForm<ConnectionForm>,
) -> PageResult {
    let input = connections::NewSplunk {
        name: f.name,
        agent_id: f.agent_id,
        base_url: f.base_url,
        app: if f.app.is_empty() {
            "search".into()
        } else {
            f.app
        },
        owner: if f.owner.is_empty() {
            "nobody".into()
        } else {
            f.owner
        },
        token: zeroize::Zeroizing::new(f.token),
    };
    match connections::create_splunk(&state, admin.tenant_id, admin.id, input).await {
        Ok(_) => Ok(see_other("/settings?done=connection#connections")),
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// The empty-means-default of a form field.
fn or_default(v: String, default: &str) -> String {
    if v.trim().is_empty() {
        default.to_owned()
    } else {
        v
    }
}

/// The Sentinel connection form's fields (the client secret is write-only).
#[derive(Deserialize)]
pub struct SentinelForm {
    name: String,
    agent_id: Uuid,
    subscription_id: String,
    resource_group: String,
    workspace_name: String,
    workspace_id: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
}

/// `POST /settings/connections/sentinel`: a Microsoft Sentinel connection
/// through the same service as the API (which checks every id's form). The
/// Azure endpoints are the public cloud's; other clouds use the API.
pub async fn create_sentinel(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageForm(f): PageForm<SentinelForm>,
) -> PageResult {
    let input = connections::NewConnection {
        name: f.name,
        agent_id: f.agent_id,
        base_url: "https://management.azure.com".into(),
        kind: connections::NewKind::Sentinel(Box::new(connections::SentinelStored {
            subscription_id: f.subscription_id.trim().to_owned(),
            resource_group: f.resource_group.trim().to_owned(),
            workspace_name: f.workspace_name.trim().to_owned(),
            workspace_id: f.workspace_id.trim().to_owned(),
            tenant_id: f.tenant_id.trim().to_owned(),
            client_id: f.client_id.trim().to_owned(),
            login_url: "https://login.microsoftonline.com".into(),
            log_analytics_url: "https://api.loganalytics.io".into(),
            ingestion: None,
        })),
        secret: zeroize::Zeroizing::new(f.client_secret),
    };
    match connections::create(&state, admin.tenant_id, admin.id, input).await {
        Ok(_) => Ok(see_other("/settings?done=connection#connections")),
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// The Elastic connection form's fields (the API key is write-only).
#[derive(Deserialize)]
pub struct ElasticForm {
    name: String,
    agent_id: Uuid,
    base_url: String,
    elasticsearch_url: String,
    #[serde(default)]
    space: String,
    #[serde(default)]
    test_index: String,
    api_key: String,
}

/// `POST /settings/connections/elastic`: an Elastic Security connection.
pub async fn create_elastic(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageForm(f): PageForm<ElasticForm>,
) -> PageResult {
    let input = connections::NewConnection {
        name: f.name,
        agent_id: f.agent_id,
        base_url: f.base_url,
        kind: connections::NewKind::Elastic(connections::ElasticStored {
            elasticsearch_url: f.elasticsearch_url,
            space: opt(f.space.trim()),
            test_index: or_default(f.test_index, "picket-test"),
        }),
        secret: zeroize::Zeroizing::new(f.api_key),
    };
    match connections::create(&state, admin.tenant_id, admin.id, input).await {
        Ok(_) => Ok(see_other("/settings?done=connection#connections")),
        Err(e) => settings_error(&state, &admin, e).await,
    }
}

/// The approval policy form's field, as typed (a number is checked here, its
/// range by the service).
#[derive(Deserialize)]
pub struct ApprovalsForm {
    min_approvers: String,
    /// A checkbox: present (`on`) when ticked, absent otherwise.
    require_tests: Option<String>,
}

/// `POST /settings/approvals`: the organisation's minimum number of distinct
/// approvers per deployment (1 to 10) and whether every deployed version
/// must carry test cases (both audited by the service).
pub async fn set_min_approvers(
    State(state): State<AppState>,
    admin: Page<perm::Administer>,
    PageForm(f): PageForm<ApprovalsForm>,
) -> PageResult {
    let n = match f.min_approvers.trim().parse::<i32>() {
        Ok(n) => n,
        Err(_) => {
            return settings_error(
                &state,
                &admin,
                ApiError::bad_request(
                    "invalid_min_approvers",
                    "approvals needed must be a whole number from 1 to 10",
                ),
            )
            .await;
        }
    };
    let require_tests = f.require_tests.is_some();
    match deployments::set_approval_policy(&state.db, &admin, Some(n), Some(require_tests)).await {
        Ok(_) => Ok(see_other("/settings?done=approvals#tenant")),
        Err(e) => settings_error(&state, &admin, e).await,
    }
}
