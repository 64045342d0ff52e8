//! The HTTP surface: routes, the counting/fault layer, authentication and the
//! handlers. Handlers copy what they need out of the state lock and never hold
//! it across an await.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::arguments;
use super::feed::{self, Feed};
use super::{Fault, Shared, Stored};

type Sim = State<Arc<Shared>>;

/// Default page size of collection listings, as in Splunk.
const DEFAULT_COUNT: usize = 30;

/// Builds the router over `shared`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let saved = "/servicesNS/{owner}/{app}/saved/searches";
    let protected = Router::new()
        .route("/services/server/info", get(server_info))
        .route(saved, get(list).post(create))
        .route(
            &format!("{saved}/{{name}}"),
            get(read).post(update).delete(remove),
        )
        .route(&format!("{saved}/{{name}}/disable"), post(disable))
        .route(&format!("{saved}/{{name}}/enable"), post(enable))
        .route("/services/search/jobs", post(super::search::jobs))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            require_auth,
        ));
    Router::new()
        .route("/services/auth/login", post(login))
        .route("/services/collector/event", post(super::search::hec))
        .merge(protected)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_and_fault,
        ))
        .with_state(shared)
}

/// Decodes `application/x-www-form-urlencoded` text (query strings and POST bodies).
pub(crate) fn parse_urlencoded(text: &[u8]) -> Vec<(String, String)> {
    fn decode(part: &[u8]) -> String {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => {
                    let hex = std::str::from_utf8(&part[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    text.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (decode(&pair[..eq]), decode(&pair[eq + 1..])),
            None => (decode(pair), String::new()),
        })
        .collect()
}

pub(crate) fn query_params(uri: &Uri) -> Vec<(String, String)> {
    parse_urlencoded(uri.query().unwrap_or_default().as_bytes())
}

pub(crate) fn wants_json(params: &[(String, String)]) -> bool {
    params
        .iter()
        .any(|(k, v)| k == "output_mode" && v.eq_ignore_ascii_case("json"))
}

pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn not_json() -> Response {
    feed::error(
        StatusCode::BAD_REQUEST,
        "ERROR",
        "picket-siem-sim answers JSON only: add output_mode=json",
        false,
    )
}

fn json_error(status: StatusCode, text: &str) -> Response {
    feed::error(status, "ERROR", text, true)
}

fn not_found_object(name: &str) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        &format!("In handler 'savedsearch': Could not find object id={name}"),
    )
}

/// Counts every request, then applies the current fault.
async fn count_and_fault(State(shared): Sim, request: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    if path.contains("/saved/searches") {
        shared.saved_search_requests.fetch_add(1, Ordering::SeqCst);
    }
    let method = request.method().clone();
    let fault = shared.lock().fault;
    let response = match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let text = format!(
                "{} (picket-siem-sim injected fault)",
                status.canonical_reason().unwrap_or("Error")
            );
            let json = wants_json(&query_params(request.uri()));
            feed::error(status, "ERROR", &text, json)
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Fault::DropConnection) | None => next.run(request).await,
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    match &shared.error_suffix {
        Some(suffix) if response.status().as_u16() >= 400 => {
            shared.suffixed_errors.fetch_add(1, Ordering::SeqCst);
            with_error_suffix(response, suffix).await
        }
        _ => response,
    }
}

/// Largest error body rewritten by [`with_error_suffix`].
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Appends ` suffix` to every message text of an error answer (JSON
/// `messages[].text`, or XML `<msg>` elements; other bodies get it at the end).
async fn with_error_suffix(response: Response, suffix: &str) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return (parts.status, format!("error {suffix}")).into_response();
    };
    let new_body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            if let Some(messages) = v["messages"].as_array_mut() {
                for m in messages {
                    if let Some(text) = m["text"].as_str() {
                        m["text"] = json!(format!("{text} {suffix}"));
                    }
                }
            }
            v.to_string().into_bytes()
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes);
            if text.contains("</msg>") {
                text.replace("</msg>", &format!(" {}</msg>", feed::xml_escape(suffix)))
                    .into_bytes()
            } else {
                format!("{text} {suffix}").into_bytes()
            }
        }
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(new_body))
}

/// Lets a request through with a configured bearer token or a live session key.
async fn require_auth(State(shared): Sim, request: Request, next: Next) -> Response {
    if is_authenticated(&shared, request.headers()) {
        next.run(request).await
    } else {
        let json = wants_json(&query_params(request.uri()));
        feed::error(
            StatusCode::UNAUTHORIZED,
            "WARN",
            "call not properly authenticated",
            json,
        )
    }
}

fn is_authenticated(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credential)) = value.trim().split_once(' ') else {
        return false;
    };
    let credential = credential.trim();
    if credential.is_empty() {
        return false;
    }
    if scheme.eq_ignore_ascii_case("Bearer") {
        shared.tokens.iter().any(|t| t == credential)
    } else if scheme.eq_ignore_ascii_case("Splunk") {
        shared.lock().sessions.contains(credential)
    } else {
        false
    }
}

async fn not_found(uri: Uri) -> Response {
    let json = wants_json(&query_params(&uri));
    feed::error(StatusCode::NOT_FOUND, "ERROR", "Not Found", json)
}

/// `POST /services/auth/login`.
async fn login(State(shared): Sim, uri: Uri, body: Bytes) -> Response {
    let form = parse_urlencoded(&body);
    let json = wants_json(&query_params(&uri)) || wants_json(&form);
    let missing: Vec<&str> = ["username", "password"]
        .into_iter()
        .filter(|k| param(&form, k).is_none())
        .collect();
    if !missing.is_empty() {
        let text = format!(
            "The following required arguments are missing: {}.",
            missing.join(", ")
        );
        return feed::error(StatusCode::BAD_REQUEST, "ERROR", &text, json);
    }
    let username = param(&form, "username").unwrap_or_default();
    let password = param(&form, "password").unwrap_or_default();
    if !shared
        .users
        .iter()
        .any(|(u, p)| u == username && p == password)
    {
        return feed::error(StatusCode::UNAUTHORIZED, "WARN", "Login failed", json);
    }
    let key = uuid::Uuid::new_v4().simple().to_string();
    shared.lock().sessions.insert(key.clone());
    if json {
        (StatusCode::OK, axum::Json(json!({ "sessionKey": key }))).into_response()
    } else {
        let body = format!("<response>\n  <sessionKey>{key}</sessionKey>\n</response>\n");
        feed::xml(StatusCode::OK, body)
    }
}

/// `GET /services/server/info`.
async fn server_info(State(shared): Sim, uri: Uri) -> Response {
    if !wants_json(&query_params(&uri)) {
        return not_json();
    }
    let feed = Feed {
        base_url: &shared.base_url,
        path: "/services/server/info".to_owned(),
        entries: vec![feed::server_info_entry(&shared.base_url)],
        total: 1,
        per_page: DEFAULT_COUNT,
        offset: 0,
    };
    (StatusCode::OK, axum::Json(feed.into_json())).into_response()
}

fn collection_path(owner: &str, app: &str) -> String {
    format!(
        "/servicesNS/{}/{}/saved/searches",
        feed::encode_segment(owner),
        feed::encode_segment(app)
    )
}

fn entry_response(
    shared: &Shared,
    status: StatusCode,
    (owner, app): (&str, &str),
    (entry_app, name): (&str, &str),
    stored: &Stored,
) -> Response {
    let entry = feed::saved_search_entry(
        &shared.base_url,
        name,
        entry_app,
        &stored.owner,
        &stored.updated,
        &stored.content,
    );
    let feed = Feed {
        base_url: &shared.base_url,
        path: collection_path(owner, app),
        entries: vec![entry],
        total: 1,
        per_page: DEFAULT_COUNT,
        offset: 0,
    };
    (status, axum::Json(feed.into_json())).into_response()
}

fn app_matches(wanted: &str, app: &str) -> bool {
    wanted == "-" || wanted == app
}

/// `GET /servicesNS/{owner}/{app}/saved/searches`.
async fn list(
    State(shared): Sim,
    Path((owner, app)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let query = query_params(&uri);
    if !wants_json(&query) {
        return not_json();
    }
    let count = match param(&query, "count").map(str::parse::<usize>) {
        None => DEFAULT_COUNT,
        Some(Ok(n)) => n,
        Some(Err(_)) => return json_error(StatusCode::BAD_REQUEST, "Invalid value for count."),
    };
    let offset = match param(&query, "offset").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return json_error(StatusCode::BAD_REQUEST, "Invalid value for offset."),
    };
    let mut matching: Vec<((String, String), Stored)> = shared
        .lock()
        .searches
        .iter()
        .filter(|((a, _), _)| app_matches(&app, a))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Splunk sorts by name by default.
    matching.sort_by(|((a1, n1), _), ((a2, n2), _)| n1.cmp(n2).then(a1.cmp(a2)));
    let total = matching.len();
    let take = if count == 0 { usize::MAX } else { count };
    let entries = matching
        .iter()
        .skip(offset)
        .take(take)
        .map(|((a, n), s)| {
            feed::saved_search_entry(&shared.base_url, n, a, &s.owner, &s.updated, &s.content)
        })
        .collect();
    let feed = Feed {
        base_url: &shared.base_url,
        path: collection_path(&owner, &app),
        entries,
        total,
        per_page: count,
        offset,
    };
    (StatusCode::OK, axum::Json(feed.into_json())).into_response()
}

/// The request's arguments: `output_mode` taken out, `name` apart (when
/// allowed), every other argument checked against the supported list.
struct Arguments {
    /// `name`, when given and allowed.
    name: Option<String>,
    /// Every other argument, validated and normalised.
    fields: BTreeMap<String, String>,
}

/// Why a request's arguments were refused; becomes a 400 answer.
enum Refusal {
    /// No `output_mode=json`: answered in XML.
    NotJson,
    /// A missing, unsupported or invalid argument, with Splunk's message.
    Invalid(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NotJson => not_json(),
            Refusal::Invalid(text) => json_error(StatusCode::BAD_REQUEST, &text),
        }
    }
}

fn parse_arguments(uri: &Uri, body: &[u8], name_allowed: bool) -> Result<Arguments, Refusal> {
    let query = query_params(uri);
    let form = parse_urlencoded(body);
    if !wants_json(&query) && !wants_json(&form) {
        return Err(Refusal::NotJson);
    }
    let mut name = None;
    let mut fields = BTreeMap::new();
    for (key, value) in form {
        if key == "output_mode" {
            continue;
        }
        if key == "name" && name_allowed {
            name = Some(value);
            continue;
        }
        let Some(kind) = arguments::kind_of(&key) else {
            let text = format!("Argument \"{key}\" is not supported by this handler.");
            return Err(Refusal::Invalid(text));
        };
        let value = arguments::normalise(&key, kind, &value).map_err(Refusal::Invalid)?;
        fields.insert(key, value);
    }
    if let Some(cron) = fields.get("cron_schedule")
        && !cron.trim().is_empty()
        && cron.split_whitespace().count() != 5
    {
        let text = format!("Cannot parse cron_schedule \"{cron}\": expected five fields.");
        return Err(Refusal::Invalid(text));
    }
    Ok(Arguments { name, fields })
}

/// `POST /servicesNS/{owner}/{app}/saved/searches`.
async fn create(
    State(shared): Sim,
    Path((owner, app)): Path<(String, String)>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let args = match parse_arguments(&uri, &body, true) {
        Ok(args) => args,
        Err(refusal) => return refusal.into_response(),
    };
    let name = args.name.unwrap_or_default();
    let mut missing = Vec::new();
    if name.trim().is_empty() {
        missing.push("name");
    }
    if args
        .fields
        .get("search")
        .is_none_or(|s| s.trim().is_empty())
    {
        missing.push("search");
    }
    if !missing.is_empty() {
        let text = format!(
            "The following required arguments are missing: {}.",
            missing.join(", ")
        );
        return json_error(StatusCode::BAD_REQUEST, &text);
    }
    if owner == "-" || app == "-" {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Cannot create an object in a wildcard namespace.",
        );
    }
    if let Some(response) = write_fault(&shared, &name) {
        return response;
    }
    let stored = Stored {
        owner: owner.clone(),
        updated: feed::now(),
        content: args.fields,
    };
    {
        let mut state = shared.lock();
        let key = (app.clone(), name.clone());
        if state.searches.contains_key(&key) {
            drop(state);
            let text =
                format!("In handler 'savedsearch': An object with name={name} already exists");
            return json_error(StatusCode::CONFLICT, &text);
        }
        state.searches.insert(key, stored.clone());
    }
    entry_response(
        &shared,
        StatusCode::CREATED,
        (&owner, &app),
        (&app, &name),
        &stored,
    )
}

/// The injected answer to a write of `name`, if a test asked for one.
fn write_fault(shared: &Shared, name: &str) -> Option<Response> {
    let status = shared.lock().write_faults.get(name).copied()?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(json_error(status, "Injected fault for this saved search."))
}

/// Finds `name` in `app` (or any app for `-`) and applies `change` to it.
/// Returns the entry's app and the stored object after the change.
fn with_saved_search(
    shared: &Shared,
    app: &str,
    name: &str,
    change: impl FnOnce(&mut Stored),
) -> Option<(String, Stored)> {
    let mut state = shared.lock();
    let (entry_app, stored) = state
        .searches
        .iter_mut()
        .find(|((a, n), _)| n == name && app_matches(app, a))
        .map(|((a, _), s)| (a.clone(), s))?;
    change(stored);
    Some((entry_app, stored.clone()))
}

/// `GET .../saved/searches/{name}`.
async fn read(
    State(shared): Sim,
    Path((owner, app, name)): Path<(String, String, String)>,
    uri: Uri,
) -> Response {
    if !wants_json(&query_params(&uri)) {
        return not_json();
    }
    match with_saved_search(&shared, &app, &name, |_| {}) {
        Some((entry_app, stored)) => entry_response(
            &shared,
            StatusCode::OK,
            (&owner, &app),
            (&entry_app, &name),
            &stored,
        ),
        None => not_found_object(&name),
    }
}

/// `POST .../saved/searches/{name}`: updates the given settings.
async fn update(
    State(shared): Sim,
    Path((owner, app, name)): Path<(String, String, String)>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let args = match parse_arguments(&uri, &body, false) {
        Ok(args) => args,
        Err(refusal) => return refusal.into_response(),
    };
    if args
        .fields
        .get("search")
        .is_some_and(|s| s.trim().is_empty())
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "Argument \"search\" cannot be empty.",
        );
    }
    if let Some(response) = write_fault(&shared, &name) {
        return response;
    }
    let now = feed::now();
    let changed = with_saved_search(&shared, &app, &name, |stored| {
        stored.content.extend(args.fields);
        stored.updated = now;
    });
    match changed {
        Some((entry_app, stored)) => entry_response(
            &shared,
            StatusCode::OK,
            (&owner, &app),
            (&entry_app, &name),
            &stored,
        ),
        None => not_found_object(&name),
    }
}

async fn set_disabled(
    shared: &Shared,
    path: (String, String, String),
    uri: &Uri,
    disabled: bool,
) -> Response {
    let (owner, app, name) = path;
    if !wants_json(&query_params(uri)) {
        return not_json();
    }
    let now = feed::now();
    let changed = with_saved_search(shared, &app, &name, |stored| {
        let value = if disabled { "1" } else { "0" };
        stored
            .content
            .insert("disabled".to_owned(), value.to_owned());
        stored.updated = now;
    });
    match changed {
        Some((entry_app, stored)) => entry_response(
            shared,
            StatusCode::OK,
            (&owner, &app),
            (&entry_app, &name),
            &stored,
        ),
        None => not_found_object(&name),
    }
}

/// `POST .../saved/searches/{name}/disable`.
async fn disable(
    State(shared): Sim,
    Path(path): Path<(String, String, String)>,
    uri: Uri,
) -> Response {
    set_disabled(&shared, path, &uri, true).await
}

/// `POST .../saved/searches/{name}/enable`.
async fn enable(
    State(shared): Sim,
    Path(path): Path<(String, String, String)>,
    uri: Uri,
) -> Response {
    set_disabled(&shared, path, &uri, false).await
}

/// `DELETE .../saved/searches/{name}`: answers the (now empty) collection page.
async fn remove(
    State(shared): Sim,
    Path((owner, app, name)): Path<(String, String, String)>,
    uri: Uri,
) -> Response {
    if !wants_json(&query_params(&uri)) {
        return not_json();
    }
    let removed = {
        let mut state = shared.lock();
        let key = state
            .searches
            .keys()
            .find(|(a, n)| n == &name && app_matches(&app, a))
            .cloned();
        key.and_then(|k| state.searches.remove(&k))
    };
    if removed.is_none() {
        return not_found_object(&name);
    }
    let feed = Feed {
        base_url: &shared.base_url,
        path: collection_path(&owner, &app),
        entries: Vec::new(),
        total: 0,
        per_page: DEFAULT_COUNT,
        offset: 0,
    };
    (StatusCode::OK, axum::Json(feed.into_json())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let parsed =
            parse_urlencoded(b"name=a+b&search=index%3Dmain%20%7C%20x&flag&bad=%zz&end=%4");
        assert_eq!(
            parsed,
            vec![
                ("name".to_owned(), "a b".to_owned()),
                ("search".to_owned(), "index=main | x".to_owned()),
                ("flag".to_owned(), String::new()),
                ("bad".to_owned(), "%zz".to_owned()),
                ("end".to_owned(), "%4".to_owned()),
            ]
        );
    }
}
