//! A Splunk management-port (REST API) simulator: authentication, `server/info`
//! and the `saved/searches` endpoints, with fault injection.
//!
//! It follows Splunk's REST API reference ("saved/searches", "auth/login",
//! "server/info") closely enough that a client written against it works
//! against Splunk: the same paths, form arguments, status codes, JSON feed
//! shape and `messages` error bodies. Saved-search arguments are checked
//! against a table tied to `savedsearches.conf.spec` (see [`arguments`]).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use picket_siem_sim::splunk::{Fault, SplunkSim};
//!
//! let sim = SplunkSim::builder().token("test-token").start().await?;
//! // point a client at sim.base_url() ...
//! sim.set_fault(Some(Fault::Status(503)));
//! assert_eq!(sim.request_count(), 0);
//! # Ok(()) }
//! ```
//!
//! # Endpoints
//! | method | path | answer |
//! |---|---|---|
//! | POST | `/services/auth/login` | `{"sessionKey": ...}` for a configured user, 401 otherwise |
//! | GET | `/services/server/info` | one entry, `content.version` = [`SPLUNK_VERSION`] |
//! | GET | `/servicesNS/{owner}/{app}/saved/searches` | the feed, paged by `count` (default 30, 0 = all) and `offset` |
//! | POST | `/servicesNS/{owner}/{app}/saved/searches` | 201 + entry; 409 if the name exists; 400 on a missing or unsupported argument |
//! | GET | `.../saved/searches/{name}` | the entry, or 404 |
//! | POST | `.../saved/searches/{name}` | 200 + entry after updating the given settings; 404; 400 for `name` or an unsupported argument |
//! | DELETE | `.../saved/searches/{name}` | 200, or 404 |
//! | POST | `.../saved/searches/{name}/disable`, `/enable` | 200 + entry, or 404 |
//! | POST | `/services/search/jobs` | `exec_mode=oneshot` only: `{results: [...], messages}` over the event store or the scripted scheduler (see [`search`]); 400 for a search it cannot parse; 200 with an `ERROR` message after [`SplunkSimHandle::set_search_error`] |
//! | POST | `/services/collector/event` | HEC: `Authorization: Splunk <hec token>` (401 `Token is required`, 403 `Invalid token`); stores the events; `{"text":"Success","code":0}` |
//!
//! Every endpoint but `auth/login` needs `Authorization: Bearer <token>` (a
//! token given to the builder) or `Authorization: Splunk <sessionKey>`;
//! otherwise 401 `call not properly authenticated`. `owner` and `app` may be
//! `-` (any) when reading. Objects are shared at app level, so lookups match on
//! app and name, whatever the owner in the path.
//!
//! Data is only served as JSON: a request without `output_mode=json` (query
//! string, or form body for POSTs) gets 400 with Splunk's XML `messages` body.
//! `auth/login` is the exception and answers XML then, as Splunk does.
//!
//! # Faults
//! [`SplunkSimHandle::set_fault`] applies to every request until cleared:
//! [`Fault::Status`] answers that status with a Splunk-shaped body before
//! authentication, [`Fault::Delay`] holds each request before handling it, and
//! [`Fault::DropConnection`] closes connections without an answer.
//!
//! # Canary
//! [`SplunkSimBuilder::error_text_suffix`] appends a string to the text of
//! every error answer (status 400 and above, JSON or XML, faults included);
//! [`SplunkSimHandle::suffixed_error_count`] counts the answers that carried
//! it. Leak tests put a unique canary there and check it never leaves the agent.

pub mod arguments;
pub(crate) mod conn;
mod feed;
mod routes;
pub mod search;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;

pub use crate::common::{RunStatus, ScriptedRun, StoredEvent};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The Splunk version the simulator claims in `server/info` and `generator`.
pub const SPLUNK_VERSION: &str = "9.2.1";

/// The `serverName` the simulator reports.
pub const SERVER_NAME: &str = "picket-sim";

/// How long [`SplunkSimHandle::shutdown`] waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Entry point: `SplunkSim::builder()`.
#[derive(Debug)]
pub struct SplunkSim;

impl SplunkSim {
    /// A builder with no tokens, no users, bound to `127.0.0.1:0`.
    pub fn builder() -> SplunkSimBuilder {
        SplunkSimBuilder {
            tokens: Vec::new(),
            hec_tokens: Vec::new(),
            users: Vec::new(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            error_suffix: None,
        }
    }
}

/// Configures and starts a simulator.
#[derive(Debug, Clone)]
pub struct SplunkSimBuilder {
    tokens: Vec<String>,
    hec_tokens: Vec<String>,
    users: Vec<(String, String)>,
    addr: SocketAddr,
    error_suffix: Option<String>,
}

impl SplunkSimBuilder {
    /// Appends ` <suffix>` to the message text of every error answer (a
    /// canary for leak tests: SIEM error text must never leave the agent).
    pub fn error_text_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.error_suffix = Some(suffix.into());
        self
    }

    /// Accepts `token` as `Authorization: Bearer <token>`. May be called several times.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// Accepts `token` at the HTTP Event Collector (`Authorization: Splunk <token>`).
    pub fn hec_token(mut self, token: impl Into<String>) -> Self {
        self.hec_tokens.push(token.into());
        self
    }

    /// Accepts `username`/`password` at `POST /services/auth/login`, which hands
    /// out session keys for `Authorization: Splunk <sessionKey>`.
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((username.into(), password.into()));
        self
    }

    /// Listens on `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Binds the listener and serves in a background task until
    /// [`SplunkSimHandle::shutdown`] or the handle is dropped.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start(self) -> anyhow::Result<SplunkSimHandle> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("binding the Splunk simulator to {}", self.addr))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        let drop_connections = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            tokens: self.tokens,
            hec_tokens: self.hec_tokens,
            users: self.users,
            base_url: format!("http://{addr}"),
            saved_search_requests: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            error_suffix: self.error_suffix,
            suffixed_errors: AtomicU64::new(0),
            drop_connections: Arc::clone(&drop_connections),
            state: Mutex::new(State::default()),
        });
        let listener = conn::FaultyListener {
            inner: listener,
            drop_connections,
        };
        let app = routes::router(Arc::clone(&shared));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Fires on an explicit shutdown and when the handle (the sender) drops.
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "Splunk simulator stopped with an error");
            }
        });
        tracing::info!(%addr, "Splunk simulator listening");
        Ok(SplunkSimHandle {
            shared,
            addr,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// A fault the simulator injects into every request until cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer this HTTP status with a Splunk `messages` body, before authentication
    /// (an out-of-range code becomes 500).
    Status(u16),
    /// Wait this long before handling each request (then handle it normally).
    Delay(Duration),
    /// Close connections without answering: new ones at accept, open ones at
    /// their next write.
    DropConnection,
}

/// A saved search as stored by the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSearch {
    /// The saved search's name (unique within its app).
    pub name: String,
    /// The app that holds it.
    pub app: String,
    /// Its owner (the `owner` segment of the path it was created under).
    pub owner: String,
    /// The settings written for its stanza, by REST argument name, as in a
    /// `local/savedsearches.conf` stanza: only what clients set (booleans
    /// normalised to `1`/`0`), without the defaults the REST view adds.
    pub content: BTreeMap<String, String>,
}

/// A running simulator. Dropping it stops the server too (gracefully, in the
/// background).
pub struct SplunkSimHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SplunkSimHandle {
    /// The address the simulator listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the management URL to give clients.
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Every saved search, ordered by app then name.
    pub fn saved_searches(&self) -> Vec<SavedSearch> {
        self.shared
            .lock()
            .searches
            .iter()
            .map(|((app, name), stored)| stored.to_saved_search(app, name))
            .collect()
    }

    /// The saved search called `name` (in any app; the first by app name).
    pub fn saved_search(&self, name: &str) -> Option<SavedSearch> {
        self.shared
            .lock()
            .searches
            .iter()
            .find(|((_, n), _)| n == name)
            .map(|((app, name), stored)| stored.to_saved_search(app, name))
    }

    /// Stores `search` directly (replacing one with the same app and name), for
    /// tests that need pre-existing objects such as a customer's own searches.
    pub fn insert_saved_search(&self, search: SavedSearch) {
        let stored = Stored {
            owner: search.owner,
            updated: feed::now(),
            content: search.content,
        };
        self.shared
            .lock()
            .searches
            .insert((search.app, search.name), stored);
    }

    /// Removes the saved search called `name` from every app (someone deleting
    /// it by hand, for drift tests). Returns whether one existed.
    pub fn remove_saved_search(&self, name: &str) -> bool {
        let mut state = self.shared.lock();
        let before = state.searches.len();
        state.searches.retain(|(_, n), _| n != name);
        state.searches.len() != before
    }

    /// Requests that reached a `saved/searches` endpoint, whatever their answer
    /// (refused, faulted or served). Zero means nothing touched saved searches.
    pub fn request_count(&self) -> u64 {
        self.shared.saved_search_requests.load(Ordering::SeqCst)
    }

    /// Requests of any kind that reached the simulator's HTTP layer.
    pub fn total_request_count(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Error answers that carried the [`SplunkSimBuilder::error_text_suffix`].
    pub fn suffixed_error_count(&self) -> u64 {
        self.shared.suffixed_errors.load(Ordering::SeqCst)
    }

    /// Events stored by HEC (and [`Self::insert_events`]).
    pub fn events(&self) -> Vec<StoredEvent> {
        self.shared.lock().events.clone()
    }

    /// Adds events directly (real, non-test data).
    pub fn insert_events(&self, events: Vec<StoredEvent>) {
        self.shared.lock().events.extend(events);
    }

    /// Sets the scheduler runs reported for the saved search `name`.
    pub fn script_runs(&self, name: &str, runs: Vec<ScriptedRun>) {
        self.shared.lock().runs.insert(name.to_owned(), runs);
    }

    /// Makes oneshot searches answer 200 with an `ERROR` message (Splunk's
    /// 200-with-error), or stops doing so.
    pub fn set_search_error(&self, on: bool) {
        self.shared.lock().search_error = on;
    }

    /// Makes every create or update of the saved search `name` answer
    /// `status` (with a Splunk `messages` body), or with `None` stops doing so.
    /// Reads and deletes are unaffected.
    pub fn fail_writes_to(&self, name: &str, status: Option<u16>) {
        let mut state = self.shared.lock();
        match status {
            Some(s) => state.write_faults.insert(name.to_owned(), s),
            None => state.write_faults.remove(name),
        };
    }

    /// Forgets every session key handed out (they then answer 401, as expired ones do).
    pub fn expire_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Sets (or with `None` clears) the fault applied to every following request.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared
            .drop_connections
            .store(fault == Some(Fault::DropConnection), Ordering::SeqCst);
        self.shared.lock().fault = fault;
    }

    /// Stops accepting connections and waits (up to 5 s) for requests in
    /// flight to finish, then returns with the port closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for SplunkSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and passwords stay out of test output.
        f.debug_struct("SplunkSimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SplunkSimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// State shared by the handle and the request handlers.
pub(crate) struct Shared {
    /// Accepted bearer tokens.
    tokens: Vec<String>,
    /// Accepted HEC tokens.
    hec_tokens: Vec<String>,
    /// Accepted (username, password) pairs for `auth/login`.
    users: Vec<(String, String)>,
    /// `http://IP:PORT`, prefixed to ids and `origin`.
    base_url: String,
    /// See [`SplunkSimHandle::request_count`].
    saved_search_requests: AtomicU64,
    /// See [`SplunkSimHandle::total_request_count`].
    requests: AtomicU64,
    /// See [`SplunkSimBuilder::error_text_suffix`].
    error_suffix: Option<String>,
    /// See [`SplunkSimHandle::suffixed_error_count`].
    suffixed_errors: AtomicU64,
    /// Mirrors `fault == Some(DropConnection)` for the listener, which cannot lock.
    drop_connections: Arc<AtomicBool>,
    /// Saved searches, sessions and the current fault. Never held across an await.
    state: Mutex<State>,
}

impl Shared {
    /// Locks the state; a poisoned lock (a panicking handler) still yields the data.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Saved searches by (app, name).
    searches: BTreeMap<(String, String), Stored>,
    /// Session keys handed out by `auth/login`.
    sessions: HashSet<String>,
    /// The fault applied to every request, if any.
    fault: Option<Fault>,
    /// Events received by HEC (and inserted by tests), for oneshot counts.
    events: Vec<StoredEvent>,
    /// Scripted scheduler runs by saved-search name.
    runs: std::collections::HashMap<String, Vec<ScriptedRun>>,
    /// Whether oneshot searches answer 200 with an ERROR message.
    search_error: bool,
    /// Saved-search names whose create and update answer this status (a
    /// fault on one object, e.g. one item of a deployment batch).
    write_faults: std::collections::HashMap<String, u16>,
}

#[derive(Debug, Clone)]
struct Stored {
    owner: String,
    updated: String,
    content: BTreeMap<String, String>,
}

impl Stored {
    fn to_saved_search(&self, app: &str, name: &str) -> SavedSearch {
        SavedSearch {
            name: name.to_owned(),
            app: app.to_owned(),
            owner: self.owner.clone(),
            content: self.content.clone(),
        }
    }
}
