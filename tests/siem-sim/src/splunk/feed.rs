//! Splunk's response shapes: the Atom-like JSON feed every collection answers
//! with (`links`, `origin`, `updated`, `generator`, `entry`, `paging`,
//! `messages`), its entries, and the `messages` error body.
//!
//! Splunk answers XML unless `output_mode=json` is given. The simulator only
//! speaks JSON for data; without `output_mode=json` it answers errors (and the
//! refusal itself) with Splunk's minimal XML `<response><messages>` body, and
//! `auth/login` with Splunk's XML `<response><sessionKey>` body, which is what
//! the vendor SDKs parse.

use std::collections::BTreeMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::arguments::{self, ValueKind};
use super::{SERVER_NAME, SPLUNK_VERSION};

/// Splunk's build id for [`SPLUNK_VERSION`], reported in `generator.build`.
pub const SPLUNK_BUILD: &str = "78803f08aabb";

/// Now, in the `2024-05-01T12:00:00+00:00` form Splunk uses for `updated`.
pub fn now() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00+00:00".to_owned())
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters stay as they are).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A JSON or XML error answer with Splunk's `messages` body.
pub fn error(status: StatusCode, kind: &str, text: &str, json: bool) -> Response {
    if json {
        let body = json!({ "messages": [{ "type": kind, "text": text }] });
        (status, axum::Json(body)).into_response()
    } else {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <messages>\n    \
             <msg type=\"{kind}\">{}</msg>\n  </messages>\n</response>\n",
            xml_escape(text)
        );
        xml(status, body)
    }
}

/// An XML body with Splunk's content type.
pub fn xml(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=UTF-8"),
    );
    response
}

/// Escapes the five XML special characters.
pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A collection answer: the feed wrapper around `entries`.
pub struct Feed<'a> {
    /// `http://host:port`, prefixed to `origin` and entry ids.
    pub base_url: &'a str,
    /// The collection's path, e.g. `/servicesNS/nobody/search/saved/searches`.
    pub path: String,
    /// The page of entries.
    pub entries: Vec<Value>,
    /// Entries in the whole collection (before paging).
    pub total: usize,
    /// Page size as requested (0 = all).
    pub per_page: usize,
    /// Index of the first entry of the page.
    pub offset: usize,
}

impl Feed<'_> {
    /// The JSON document.
    pub fn into_json(self) -> Value {
        json!({
            "links": { "create": format!("{}/_new", self.path), "_reload": format!("{}/_reload", self.path) },
            "origin": format!("{}{}", self.base_url, self.path),
            "updated": now(),
            "generator": { "build": SPLUNK_BUILD, "version": SPLUNK_VERSION },
            "entry": self.entries,
            "paging": { "total": self.total, "perPage": self.per_page, "offset": self.offset },
            "messages": [],
        })
    }
}

/// The `acl` object of an app-shared object owned by `owner`.
pub fn acl(app: &str, owner: &str) -> Value {
    json!({
        "app": app,
        "can_change_perms": true,
        "can_list": true,
        "can_share_app": true,
        "can_share_global": true,
        "can_share_user": true,
        "can_write": true,
        "modifiable": true,
        "owner": owner,
        "perms": { "read": ["*"], "write": ["admin", "power"] },
        "removable": true,
        "sharing": "app",
    })
}

/// One saved search as a feed entry.
pub fn saved_search_entry(
    base_url: &str,
    name: &str,
    app: &str,
    owner: &str,
    updated: &str,
    content: &BTreeMap<String, String>,
) -> Value {
    let path = format!(
        "/servicesNS/{}/{}/saved/searches/{}",
        encode_segment(owner),
        encode_segment(app),
        encode_segment(name)
    );
    json!({
        "name": name,
        "id": format!("{base_url}{path}"),
        "updated": updated,
        "links": {
            "alternate": path,
            "list": path,
            "edit": path,
            "remove": path,
            "disable": format!("{path}/disable"),
            "enable": format!("{path}/enable"),
        },
        "author": owner,
        "acl": acl(app, owner),
        "content": saved_search_content(content),
    })
}

/// The REST view of a stanza: the spec's defaults overlaid with what the stanza
/// sets; booleans as JSON booleans, everything else as strings.
pub fn saved_search_content(stanza: &BTreeMap<String, String>) -> Value {
    let mut merged: BTreeMap<&str, &str> = arguments::DEFAULTS.iter().copied().collect();
    for (k, v) in stanza {
        merged.insert(k.as_str(), v.as_str());
    }
    let mut content = Map::new();
    for (k, v) in merged {
        let value = match arguments::kind_of(k) {
            Some(ValueKind::Boolean) => Value::Bool(v == "1"),
            _ => Value::String(v.to_owned()),
        };
        content.insert(k.to_owned(), value);
    }
    Value::Object(content)
}

/// The single entry of `server/info`.
pub fn server_info_entry(base_url: &str) -> Value {
    let path = "/services/server/info/server-info";
    json!({
        "name": "server-info",
        "id": format!("{base_url}{path}"),
        "updated": now(),
        "links": { "alternate": path, "list": path },
        "author": "system",
        "acl": {
            "app": "", "can_list": true, "can_write": true, "modifiable": false,
            "owner": "system", "perms": { "read": ["*"], "write": [] },
            "removable": false, "sharing": "system",
        },
        "content": {
            "build": SPLUNK_BUILD,
            "cpu_arch": "x86_64",
            "guid": "00000000-0000-4000-8000-000000000000",
            "health_info": "green",
            "host": SERVER_NAME,
            "isFree": false,
            "isTrial": false,
            "mode": "normal",
            "numberOfCores": 2,
            "os_name": "Linux",
            "product_type": "enterprise",
            "serverName": SERVER_NAME,
            "server_roles": ["search_head"],
            "version": SPLUNK_VERSION,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_segments() {
        assert_eq!(encode_segment("picket-1a"), "picket-1a");
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn content_has_defaults_and_booleans() {
        let mut stanza = BTreeMap::new();
        stanza.insert("disabled".to_owned(), "1".to_owned());
        stanza.insert("search".to_owned(), "index=main".to_owned());
        let content = saved_search_content(&stanza);
        assert_eq!(content["disabled"], Value::Bool(true));
        assert_eq!(content["is_scheduled"], Value::Bool(false));
        assert_eq!(content["search"], "index=main");
        assert_eq!(content["alert_type"], "always");
    }
}
