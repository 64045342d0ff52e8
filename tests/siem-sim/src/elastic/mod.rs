//! An Elastic Security simulator: the Kibana detection engine API
//! (`Elastic-Api-Version: 2023-10-31`) and the Elasticsearch `_bulk` and
//! `_count` APIs, with fault injection. Kibana and Elasticsearch share one
//! listener (their paths do not overlap).
//!
//! # Endpoints
//! | method | path | answer |
//! |---|---|---|
//! | POST | `[/s/{space}]/api/detection_engine/rules` | 200 + rule; 409 when `rule_id` exists; 400 on a missing/invalid field |
//! | PUT | same | 200 + rule (full replace by `rule_id`); 404 |
//! | PATCH | same | 200 + rule (fields merged by `rule_id`); 404 |
//! | GET | same `?rule_id=` | 200 + rule with `execution_summary` when runs are scripted; 404 |
//! | DELETE | same `?rule_id=` | 200 + the deleted rule; 404 |
//! | GET | `.../rules/_find?page=&per_page=&filter=` | `{page, perPage, total, data}`; `filter` understands `alert.attributes.tags:"T"` |
//! | POST | `.../rules/_bulk_action` | `enable` / `disable` / `delete` by `ids`; 500 with `attributes.errors` when some id is unknown |
//! | POST | `/_bulk`, `/{index}/_bulk` | NDJSON `index`/`create` actions; stores the documents |
//! | POST/GET | `/{index}/_count` | `{count}` for `term`, `range` on `@timestamp` and simple `query_string` (`a:b AND c:d`) |
//!
//! Every call needs `Authorization: ApiKey <key>` with a configured key
//! (401 otherwise; [`ElasticSimHandle::expire_keys`] makes them answer 401 as an
//! expired key). Kibana calls other than GET need `kbn-xsrf` (400), and an
//! `Elastic-Api-Version` other than `2023-10-31` is refused (400).

mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use crate::common::{self, FaultSlot, Running};
pub use crate::common::{Fault, RunStatus, ScriptedRun, StoredEvent};

/// The detection engine API version the simulator serves.
pub const API_VERSION: &str = "2023-10-31";

/// Entry point: `ElasticSim::builder()`.
#[derive(Debug)]
pub struct ElasticSim;

impl ElasticSim {
    /// A builder with no keys, pages capped at 100, bound to `127.0.0.1:0`.
    pub fn builder() -> ElasticSimBuilder {
        ElasticSimBuilder {
            keys: Vec::new(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            error_suffix: None,
        }
    }
}

/// Configures and starts a simulator.
#[derive(Debug, Clone)]
pub struct ElasticSimBuilder {
    keys: Vec<String>,
    addr: SocketAddr,
    error_suffix: Option<String>,
}

impl ElasticSimBuilder {
    /// Accepts `Authorization: ApiKey <key>`. May be called several times.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(key.into());
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
    pub async fn start(self) -> anyhow::Result<ElasticSimHandle> {
        let drop_flag = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            keys: self.keys,
            error_suffix: self.error_suffix,
            requests: AtomicU64::new(0),
            rule_requests: AtomicU64::new(0),
            suffixed_errors: AtomicU64::new(0),
            keys_expired: AtomicBool::new(false),
            drop_flag: Arc::clone(&drop_flag),
            state: Mutex::new(State::default()),
        });
        let app = routes::router(Arc::clone(&shared));
        let running = Running::start("Elastic", self.addr, app, drop_flag).await?;
        Ok(ElasticSimHandle { shared, running })
    }
}

/// A detection rule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    /// Saved-object id (what `_bulk_action` takes).
    pub id: String,
    /// The space it lives in (`default` for none).
    pub space: String,
    /// The full rule as the API shows it (without `execution_summary`).
    pub body: Value,
}

impl StoredRule {
    /// `rule_id`.
    pub fn rule_id(&self) -> &str {
        self.body
            .get("rule_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `enabled`.
    pub fn enabled(&self) -> bool {
        self.body
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// A running simulator; dropping it stops the server.
pub struct ElasticSimHandle {
    shared: Arc<Shared>,
    running: Running,
}

impl ElasticSimHandle {
    /// `http://IP:PORT`: both the Kibana and the Elasticsearch URL.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    /// Every rule (all spaces), by space then `rule_id`.
    pub fn rules(&self) -> Vec<StoredRule> {
        self.shared.lock().rules.values().cloned().collect()
    }

    /// The rule with this `rule_id` in any space.
    pub fn rule(&self, rule_id: &str) -> Option<StoredRule> {
        self.shared
            .lock()
            .rules
            .values()
            .find(|r| r.rule_id() == rule_id)
            .cloned()
    }

    /// Stores a rule directly in `space` (a customer's own rule, or a change behind Picket's back).
    pub fn insert_rule(&self, space: &str, body: Value) {
        let mut state = self.shared.lock();
        let id = uuid::Uuid::new_v4().to_string();
        let mut body = body;
        body["id"] = Value::String(id.clone());
        let rule_id = body
            .get("rule_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        state.rules.insert(
            (space.to_owned(), rule_id),
            StoredRule {
                id,
                space: space.to_owned(),
                body,
            },
        );
    }

    /// Every rule body received by create/update/patch, in order (for schema checks).
    pub fn received_bodies(&self) -> Vec<(String, Value)> {
        self.shared.lock().bodies.clone()
    }

    /// Documents stored in `index`.
    pub fn documents(&self, index: &str) -> Vec<StoredEvent> {
        self.shared
            .lock()
            .indices
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    /// Sets the runs behind the rule's `execution_summary` (the last one is reported).
    pub fn script_runs(&self, rule_id: &str, runs: Vec<ScriptedRun>) {
        self.shared.lock().runs.insert(rule_id.to_owned(), runs);
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

    /// Makes every configured key answer 401 as expired.
    pub fn expire_keys(&self) {
        self.shared.keys_expired.store(true, Ordering::SeqCst);
    }

    /// Requests of any kind.
    pub fn total_request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests that reached a detection-engine path.
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

impl std::fmt::Debug for ElasticSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElasticSimHandle")
            .field("addr", &self.running.addr)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    keys: Vec<String>,
    error_suffix: Option<String>,
    requests: AtomicU64,
    rule_requests: AtomicU64,
    suffixed_errors: AtomicU64,
    keys_expired: AtomicBool,
    drop_flag: Arc<AtomicBool>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Rules by (space, rule_id).
    rules: BTreeMap<(String, String), StoredRule>,
    /// (operation, body) of every create/update/patch.
    bodies: Vec<(String, Value)>,
    indices: HashMap<String, Vec<StoredEvent>>,
    runs: HashMap<String, Vec<ScriptedRun>>,
    fault: FaultSlot,
}
