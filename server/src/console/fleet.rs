//! The fleet table (paged, sorted and filtered in the database) and the
//! agent page with health charts drawn on the server.

use askama::Template;
use axum::extract::State;
use picket_proto::SiemHealth;
use serde::Deserialize;
use uuid::Uuid;

use super::views::{self, Badge};
use super::{Chrome, Page, PagePath, PageQuery, PageResult, encode_query, ok};
use crate::AppState;
use crate::db::entity::{agent, agent_health};
use crate::error::ApiError;
use crate::gateway::Registry;
use crate::service::console::{self as q, FLEET_PAGE, FleetQuery, FleetSort, Liveness};
use crate::service::{agents, connections};
use crate::time::unix_now;

/// The fleet status of an agent (as the API derives it): revoked, offline
/// (not connected), degraded (a SIEM unreachable) or online.
pub fn status(
    registry: &Registry,
    a: &agent::Model,
    h: Option<&agent_health::Model>,
) -> &'static str {
    if a.revoked_at.is_some() {
        "revoked"
    } else if !registry.is_connected(a.id) {
        "offline"
    } else if h.is_some_and(|h| siem_of(h).iter().any(|s| !s.reachable)) {
        "degraded"
    } else {
        "online"
    }
}

fn siem_of(h: &agent_health::Model) -> Vec<SiemHealth> {
    serde_json::from_str(&h.siem).unwrap_or_default()
}

/// One agent as a row of the table.
struct AgentRow {
    id: Uuid,
    host: String,
    version: String,
    badge: Badge,
    last_seen: String,
    siem: String,
    cpu: String,
    mem: String,
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage {
    chrome: Chrome,
    rows: Vec<AgentRow>,
    total: u64,
    first: u64,
    last: u64,
    host: String,
    live: &'static str,
    sort: &'static str,
    desc: bool,
    prev: Option<String>,
    next: Option<String>,
    by_host: SortLink,
    by_version: SortLink,
    by_seen: SortLink,
}

/// A sortable column header: where it links and its `aria-sort`.
struct SortLink {
    href: String,
    aria: &'static str,
}

/// Query string of the fleet table.
#[derive(Deserialize, Default)]
pub struct FleetParams {
    host: Option<String>,
    live: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<u64>,
}

fn link(host: &str, live: &str, sort: &str, desc: bool, page: u64) -> String {
    format!(
        "/fleet?host={}&live={live}&sort={sort}&dir={}&page={page}",
        encode_query(host),
        if desc { "desc" } else { "asc" }
    )
}

/// `GET /fleet`.
pub async fn fleet(
    State(state): State<AppState>,
    user: Page<crate::auth::perm::ReadAgents>,
    PageQuery(p): PageQuery<FleetParams>,
) -> PageResult {
    let bad = |m: &str| ApiError::bad_request("invalid_query", m.to_owned());
    let sort = match p.sort.as_deref() {
        None | Some("") => FleetSort::Host,
        Some(s) => FleetSort::parse(s)
            .ok_or_else(|| bad("sort: expected host, version, last_seen or enrolled"))?,
    };
    let desc = match p.dir.as_deref() {
        None | Some("" | "asc") => false,
        Some("desc") => true,
        Some(_) => return Err(bad("dir: expected asc or desc").into()),
    };
    let (liveness, live) = match p.live.as_deref() {
        None | Some("" | "any") => (Liveness::Any, "any"),
        Some("connected") => (Liveness::Connected, "connected"),
        Some("disconnected") => (Liveness::Disconnected, "disconnected"),
        Some(_) => return Err(bad("live: expected any, connected or disconnected").into()),
    };
    let page = p.page.unwrap_or(0).min(1_000_000);
    let host = p.host.unwrap_or_default();
    let fq = FleetQuery {
        host_prefix: Some(host.clone()),
        liveness,
        sort,
        desc,
        page,
    };
    let res = q::fleet_page(&state.db, &state.registry, user.scope(), &fq).await?;
    let now = unix_now();
    let rows: Vec<AgentRow> = res
        .rows
        .iter()
        .map(|(a, h)| {
            let st = status(&state.registry, a, h.as_ref());
            let siem = h.as_ref().map(siem_of).unwrap_or_default();
            let reachable = siem.iter().filter(|s| s.reachable).count();
            let latency = siem.iter().filter_map(|s| s.latency_ms).max();
            AgentRow {
                id: a.id,
                host: a.hostname.clone(),
                version: a.version.clone(),
                badge: views::agent_badge(st),
                last_seen: a
                    .last_seen_at
                    .map_or_else(|| "never".to_owned(), |t| views::ago(now, t)),
                siem: if siem.is_empty() {
                    "no report".to_owned()
                } else {
                    format!(
                        "{reachable}/{} reachable{}",
                        siem.len(),
                        latency.map(|l| format!(", {l} ms")).unwrap_or_default()
                    )
                },
                cpu: h
                    .as_ref()
                    .map(|h| format!("{:.1} %", h.cpu_percent))
                    .unwrap_or_default(),
                mem: h
                    .as_ref()
                    .map(|h| {
                        format!(
                            "{} (host {} / {})",
                            views::mib(h.rss_bytes),
                            views::mib(h.host_mem_used_bytes),
                            views::mib(h.host_mem_total_bytes)
                        )
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let first = page * FLEET_PAGE + 1;
    let last = page * FLEET_PAGE + rows.len() as u64;
    let col = |key: &'static str| {
        let active = key == sort.as_str();
        // Clicking the active column flips its direction.
        let d = active && !desc;
        let aria = match (active, desc) {
            (false, _) => "none",
            (true, false) => "ascending",
            (true, true) => "descending",
        };
        SortLink {
            href: link(&host, live, key, d, 0),
            aria,
        }
    };
    let (by_host, by_version, by_seen) = (col("host"), col("version"), col("last_seen"));
    ok(&FleetPage {
        chrome: Chrome::of(&user, "Fleet", "fleet"),
        prev: (page > 0).then(|| link(&host, live, sort.as_str(), desc, page - 1)),
        next: (last < res.total).then(|| link(&host, live, sort.as_str(), desc, page + 1)),
        rows,
        total: res.total,
        first: if res.total == 0 { 0 } else { first },
        last,
        host,
        live,
        sort: sort.as_str(),
        desc,
        by_host,
        by_version,
        by_seen,
    })
}

struct JobRow {
    id: Uuid,
    kind: String,
    state: String,
    outcome: String,
    created: String,
    duration: String,
}

struct SiemRow {
    name: String,
    badge: Badge,
    latency: String,
    error: String,
}

#[derive(Template)]
#[template(path = "console/agent.html")]
struct AgentPage {
    chrome: Chrome,
    a: agent::Model,
    badge: Badge,
    last_seen: String,
    enrolled: String,
    reported: String,
    cpu_chart: String,
    mem_chart: String,
    siem_chart: String,
    siem: Vec<SiemRow>,
    jobs: Vec<JobRow>,
}

/// Health history shown on the agent page.
const HISTORY_SECS: i64 = 24 * 3600;
/// Most samples drawn per chart.
const HISTORY_POINTS: u64 = 720;

/// `GET /fleet/{id}`: one agent, its health history and recent jobs.
pub async fn agent(
    State(state): State<AppState>,
    user: Page<crate::auth::perm::ReadAgents>,
    PagePath(id): PagePath<Uuid>,
) -> PageResult {
    let scope = user.scope();
    let v = agents::get(&state.db, user.tenant_id, id).await?;
    let now = unix_now();
    let samples =
        q::health_history(&state.db, scope, id, now - HISTORY_SECS, HISTORY_POINTS).await?;
    #[allow(clippy::cast_precision_loss)] // chart values
    let cpu: Vec<(i64, f64)> = samples
        .iter()
        .map(|s| (s.reported_at, s.cpu_percent))
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let mem: Vec<(i64, f64)> = samples
        .iter()
        .map(|s| (s.reported_at, s.rss_bytes as f64 / (1024.0 * 1024.0)))
        .collect();
    #[allow(clippy::cast_precision_loss)]
    let reach: Vec<(i64, f64)> = samples
        .iter()
        .filter(|s| s.siem_total > 0)
        .map(|s| {
            (
                s.reported_at,
                100.0 * f64::from(s.siem_reachable) / f64::from(s.siem_total),
            )
        })
        .collect();
    let conns = connections::for_agent(&state.db, user.tenant_id, id).await?;
    let siem = v
        .health
        .as_ref()
        .map(siem_of)
        .unwrap_or_default()
        .into_iter()
        .map(|s| SiemRow {
            name: conns
                .iter()
                .find(|c| c.id == s.connection_id)
                .map_or_else(|| s.connection_id.to_string(), |c| c.name.clone()),
            badge: if s.reachable {
                Badge {
                    label: "reachable",
                    class: "ok",
                }
            } else {
                Badge {
                    label: "unreachable",
                    class: "bad",
                }
            },
            latency: s.latency_ms.map(|l| format!("{l} ms")).unwrap_or_default(),
            error: s
                .error_class
                .map(|c| c.as_str().to_owned())
                .unwrap_or_default(),
        })
        .collect();
    let jobs = q::recent_jobs(&state.db, scope, id, 20)
        .await?
        .into_iter()
        .map(|j| JobRow {
            id: j.id,
            kind: j.kind,
            state: j.state,
            outcome: j.outcome.unwrap_or_default(),
            created: views::when(j.created_at),
            duration: j.duration_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
        })
        .collect();
    let st = status(&state.registry, &v.agent, v.health.as_ref());
    ok(&AgentPage {
        chrome: Chrome::of(&user, v.agent.hostname.clone(), "fleet"),
        badge: views::agent_badge(st),
        last_seen: v.agent.last_seen_at.map_or_else(
            || "never".to_owned(),
            |t| format!("{} ({})", views::when(t), views::ago(now, t)),
        ),
        enrolled: views::when(v.agent.enrolled_at),
        reported: v.health.as_ref().map_or_else(
            || "no health report yet".to_owned(),
            |h| views::ago(now, h.reported_at),
        ),
        cpu_chart: views::line_chart(&cpu, "Agent CPU, percent of one core, last 24 h", "%"),
        mem_chart: views::line_chart(&mem, "Agent resident memory, last 24 h", "MiB"),
        siem_chart: views::line_chart(&reach, "SIEM connections reachable, last 24 h", "%"),
        siem,
        jobs,
        a: v.agent,
    })
}
