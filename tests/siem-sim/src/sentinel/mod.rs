//! A Microsoft Sentinel simulator: the Entra token endpoint (client
//! credentials), the ARM `alertRules` API (`2024-09-01`), the Log Analytics
//! query API and the Logs Ingestion API, with fault injection.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use picket_siem_sim::sentinel::SentinelSim;
//!
//! let sim = SentinelSim::builder().client("client-id", "secret").start().await?;
//! // management, login, Log Analytics and ingestion URLs are all sim.base_url()
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/{tenant}/oauth2/v2.0/token` | `{token_type, expires_in, access_token}` for a configured client and a known scope; 401 `invalid_client`; 400 `invalid_scope` / `unsupported_grant_type` |
//! | GET | `{workspace}/providers/Microsoft.SecurityInsights/alertRules?api-version=2024-09-01` | `{value, nextLink}` paged ([`SentinelSimBuilder::page_size`]) |
//! | PUT | `.../alertRules/{ruleId}?api-version=2024-09-01` | 201 created / 200 updated; 400 for a missing or mistyped required property; 412 when the body's `etag` is not the current one |
//! | GET | `.../alertRules/{ruleId}?...` | 200 with the rule and its `etag`, or 404 |
//! | DELETE | `.../alertRules/{ruleId}?...` | 200, or 204 when it did not exist (ARM semantics) |
//! | POST | `/v1/workspaces/{workspaceId}/query` | `{tables: [...]}`; 400 `BadArgumentError` for a query form it does not understand |
//! | POST | `/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01` | 204; stores the events in the stream's table (`Custom-X` → `X`) |
//!
//! `{workspace}` is `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{name}`;
//! any subscription, group and workspace name are accepted. Every call but the
//! token endpoint needs `Authorization: Bearer <token>` issued for the matching
//! audience (ARM, Log Analytics or Azure Monitor); otherwise 401
//! `InvalidAuthenticationToken`, or `ExpiredAuthenticationToken` after
//! [`SentinelSimHandle::expire_tokens`]. ARM calls without the supported
//! `api-version` get 400 `MissingApiVersionParameter` /
//! `InvalidApiVersionParameter`.
//!
//! # Query forms
//! - `T | where TimeGenerated between (datetime(A) .. datetime(B)) | where k == "v" and ... | count`
//!   counts stored events of table `T`;
//! - `SentinelHealth | ... SentinelResourceId endswith "/alertRules/NAME" ... | summarize ...`
//!   answers one row (`Succeeded`, `Failed`, `Partial`, `Alerts`, `Results`,
//!   `LastRun`, `LastDurationMs`) from the runs scripted with
//!   [`SentinelSimHandle::script_runs`].

mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::common::{self, FaultSlot, Running};
pub use crate::common::{Fault, RunStatus, ScriptedRun, StoredEvent};

/// The only `api-version` the ARM routes accept.
pub const API_VERSION: &str = "2024-09-01";
/// The Logs Ingestion API version.
pub const INGESTION_API_VERSION: &str = "2023-01-01";
/// Scope of Azure Resource Manager tokens.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Scope of Log Analytics query tokens.
pub const LOG_ANALYTICS_SCOPE: &str = "https://api.loganalytics.io/.default";
/// Scope of Logs Ingestion tokens (Microsoft documents the double slash).
pub const MONITOR_SCOPE: &str = "https://monitor.azure.com//.default";
/// Lifetime of issued tokens, seconds (Entra's usual).
pub const TOKEN_LIFETIME_SECS: u64 = 3599;

/// Entry point: `SentinelSim::builder()`.
#[derive(Debug)]
pub struct SentinelSim;

impl SentinelSim {
    /// A builder with no clients, pages of 50 rules, bound to `127.0.0.1:0`.
    pub fn builder() -> SentinelSimBuilder {
        SentinelSimBuilder {
            clients: Vec::new(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            page_size: 50,
            error_suffix: None,
            token_lifetime_secs: TOKEN_LIFETIME_SECS,
            next_link_base: None,
        }
    }
}

/// Configures and starts a simulator.
#[derive(Debug, Clone)]
pub struct SentinelSimBuilder {
    clients: Vec<(String, String)>,
    addr: SocketAddr,
    page_size: usize,
    error_suffix: Option<String>,
    token_lifetime_secs: u64,
    next_link_base: Option<String>,
}

impl SentinelSimBuilder {
    /// Writes `nextLink`s under this base URL instead of the simulator's own
    /// (a hostile or misconfigured answer pointing the client elsewhere).
    pub fn next_link_base(mut self, base: impl Into<String>) -> Self {
        self.next_link_base = Some(base.into());
        self
    }

    /// Accepts this app registration (client id, client secret) at the token endpoint.
    pub fn client(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.clients.push((client_id.into(), secret.into()));
        self
    }

    /// Rules per page of the list (at least 1).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// `expires_in` of issued tokens, seconds.
    pub fn token_lifetime_secs(mut self, secs: u64) -> Self {
        self.token_lifetime_secs = secs;
        self
    }

    /// Appends ` <suffix>` to every error message (a canary for leak tests).
    pub fn error_text_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.error_suffix = Some(suffix.into());
        self
    }

    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Binds and serves in the background until shutdown or drop.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(self) -> anyhow::Result<SentinelSimHandle> {
        let drop_flag = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            clients: self.clients,
            page_size: self.page_size,
            error_suffix: self.error_suffix,
            token_lifetime_secs: self.token_lifetime_secs,
            next_link_base: self.next_link_base,
            base_url: Mutex::new(String::new()),
            requests: AtomicU64::new(0),
            rule_requests: AtomicU64::new(0),
            tokens_issued: AtomicU64::new(0),
            suffixed_errors: AtomicU64::new(0),
            drop_flag: Arc::clone(&drop_flag),
            state: Mutex::new(State::default()),
        });
        let app = routes::router(Arc::clone(&shared));
        let running = Running::start("Sentinel", self.addr, app, drop_flag).await?;
        *shared
            .base_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = format!("http://{}", running.addr);
        Ok(SentinelSimHandle { shared, running })
    }
}

/// An alert rule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    /// The rule id (last path segment).
    pub name: String,
    /// Current etag (quoted GUID, as ARM writes it).
    pub etag: String,
    /// `kind`.
    pub kind: String,
    /// `properties` as last written (plus `lastModifiedUtc`).
    pub properties: Value,
}

/// A running simulator; dropping it stops the server.
pub struct SentinelSimHandle {
    shared: Arc<Shared>,
    running: Running,
}

impl SentinelSimHandle {
    /// `http://IP:PORT`: the management, login, Log Analytics and ingestion URL.
    pub fn base_url(&self) -> String {
        self.shared.base_url()
    }

    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// Every alert rule, by name.
    pub fn rules(&self) -> Vec<StoredRule> {
        self.shared.lock().rules.values().cloned().collect()
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<StoredRule> {
        self.shared.lock().rules.get(name).cloned()
    }

    /// Stores a rule directly (a customer's own rule, or a change made behind
    /// Picket's back); a new etag is assigned.
    pub fn insert_rule(&self, name: &str, kind: &str, properties: Value) {
        let mut state = self.shared.lock();
        let etag = state.next_etag();
        state.rules.insert(
            name.to_owned(),
            StoredRule {
                name: name.to_owned(),
                etag,
                kind: kind.to_owned(),
                properties,
            },
        );
    }

    /// Every PUT body received on `alertRules`, in order (for schema checks).
    pub fn received_bodies(&self) -> Vec<Value> {
        self.shared.lock().bodies.clone()
    }

    /// Events stored in `table`.
    pub fn events(&self, table: &str) -> Vec<StoredEvent> {
        self.shared
            .lock()
            .tables
            .get(table)
            .cloned()
            .unwrap_or_default()
    }

    /// Adds events to `table` directly (real, non-test data).
    pub fn insert_events(&self, table: &str, events: Vec<StoredEvent>) {
        self.shared
            .lock()
            .tables
            .entry(table.to_owned())
            .or_default()
            .extend(events);
    }

    /// Sets the runs `SentinelHealth` reports for the rule called `name`.
    pub fn script_runs(&self, name: &str, runs: Vec<ScriptedRun>) {
        self.shared.lock().runs.insert(name.to_owned(), runs);
    }

    /// Sets (or clears) the fault applied to every following request.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.set_fault_times(fault, None);
    }

    /// Applies `fault` to the next `times` requests only (`None`: until cleared).
    pub fn set_fault_times(&self, fault: Option<Fault>, times: Option<u32>) {
        let mut state = self.shared.lock();
        state.fault.set(fault, times);
        common::sync_drop_flag(&state.fault, &self.shared.drop_flag);
    }

    /// Makes every token issued so far expired (ARM answers `ExpiredAuthenticationToken`).
    pub fn expire_tokens(&self) {
        for token in self.shared.lock().tokens.values_mut() {
            token.expired = true;
        }
    }

    /// Tokens the token endpoint issued.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.tokens_issued.load(Ordering::SeqCst)
    }

    /// Requests of any kind.
    pub fn total_request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests that reached an `alertRules` path (whatever their answer).
    pub fn request_count(&self) -> u64 {
        self.shared.rule_requests.load(Ordering::SeqCst)
    }

    /// Error answers that carried the canary suffix.
    pub fn suffixed_error_count(&self) -> u64 {
        self.shared.suffixed_errors.load(Ordering::SeqCst)
    }

    /// Stops the server, waiting up to 5 s for requests in flight.
    pub async fn shutdown(mut self) {
        self.running.shutdown().await;
    }
}

impl std::fmt::Debug for SentinelSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSimHandle")
            .field("addr", &self.running.addr)
            .finish_non_exhaustive()
    }
}

/// State shared by the handle and the handlers.
pub(crate) struct Shared {
    clients: Vec<(String, String)>,
    page_size: usize,
    error_suffix: Option<String>,
    token_lifetime_secs: u64,
    next_link_base: Option<String>,
    base_url: Mutex<String>,
    requests: AtomicU64,
    rule_requests: AtomicU64,
    tokens_issued: AtomicU64,
    suffixed_errors: AtomicU64,
    drop_flag: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn base_url(&self) -> String {
        self.base_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An issued access token.
#[derive(Debug, Clone)]
struct Token {
    scope: String,
    expires_at: i64,
    expired: bool,
}

#[derive(Debug, Default)]
struct State {
    rules: BTreeMap<String, StoredRule>,
    bodies: Vec<Value>,
    tables: HashMap<String, Vec<StoredEvent>>,
    runs: HashMap<String, Vec<ScriptedRun>>,
    tokens: HashMap<String, Token>,
    fault: FaultSlot,
    etag_counter: u64,
}

impl State {
    fn next_etag(&mut self) -> String {
        self.etag_counter += 1;
        format!("\"{}\"", uuid::Uuid::new_v4())
    }
}
