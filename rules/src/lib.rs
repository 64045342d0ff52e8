//! Picket's rule validation, as a pure library: no I/O, no server, usable
//! offline (a CI job can check a rules repository with it before a push).
//!
//! [`validate`] checks a whole rule draft and returns a [`Report`] of errors
//! (which block a save) and warnings (returned with the saved version), each
//! a [`Diagnostic`] naming the field and, for queries, the line and column.
//!
//! # Layout
//! - `diag`: [`Diagnostic`] and [`Report`].
//! - `scan`: one pass over a query that masks strings and comments, checks
//!   quotes and brackets balance, and finds top-level pipes.
//! - `spl`, `kql`, `elastic`: the per-language checks (known pipeline
//!   commands, refused destructive or data-moving commands, costly patterns).
//! - `schedule`: cron, Splunk time modifiers, ISO 8601 durations (Sentinel),
//!   Elastic `interval`/`from`.
//! - `mitre`: ATT&CK technique tags (`T1059`, `T1059.001`).
//! - `file`: the one-rule-per-file TOML format (with its test cases), bounded.
//! - `testfilter`: the match condition rule tests count with, per language.

mod diag;
mod elastic;
mod file;
mod kql;
mod mitre;
mod scan;
mod schedule;
mod spl;
mod testfilter;

pub use diag::{Diagnostic, Report};
pub use file::{
    Expect, FileError, FileSchedule, MAX_FILE_BYTES, ParsedFile, RuleFile, TestCase,
    canonical_schedule, check_tests, parse_file, to_file,
};
pub use mitre::valid_technique;
pub use schedule::{
    Schedule, elastic_from, elastic_interval, iso8601_duration, schedule_from_native,
};
pub use testfilter::{preview_query, test_filter};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Most ATT&CK tags on one rule.
pub const MAX_MITRE_TAGS: usize = 64;

/// The SIEM a rule targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiemKind {
    /// Splunk (SPL).
    Splunk,
    /// Microsoft Sentinel (KQL).
    Sentinel,
    /// Elastic Security (KQL "kuery", EQL or ES|QL).
    Elastic,
}

impl SiemKind {
    /// Stable name, as stored and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SiemKind::Splunk => "splunk",
            SiemKind::Sentinel => "sentinel",
            SiemKind::Elastic => "elastic",
        }
    }

    /// The kind named `s`, if any.
    pub fn parse(s: &str) -> Option<SiemKind> {
        match s {
            "splunk" => Some(SiemKind::Splunk),
            "sentinel" => Some(SiemKind::Sentinel),
            "elastic" => Some(SiemKind::Elastic),
            _ => None,
        }
    }

    /// The language a rule of this kind uses when none is given.
    pub fn default_language(self) -> Language {
        match self {
            SiemKind::Splunk => Language::Spl,
            SiemKind::Sentinel => Language::Kql,
            SiemKind::Elastic => Language::Kuery,
        }
    }
}

/// A query language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    /// Splunk Search Processing Language.
    Spl,
    /// Kusto Query Language (Microsoft Sentinel).
    Kql,
    /// Kibana Query Language, Elastic's `query` rule type.
    Kuery,
    /// Elastic Event Query Language.
    Eql,
    /// Elasticsearch ES|QL.
    Esql,
}

impl Language {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Spl => "spl",
            Language::Kql => "kql",
            Language::Kuery => "kuery",
            Language::Eql => "eql",
            Language::Esql => "esql",
        }
    }

    /// The language named `s`, if any.
    pub fn parse(s: &str) -> Option<Language> {
        match s {
            "spl" => Some(Language::Spl),
            "kql" => Some(Language::Kql),
            "kuery" => Some(Language::Kuery),
            "eql" => Some(Language::Eql),
            "esql" => Some(Language::Esql),
            _ => None,
        }
    }

    /// Whether a rule for `kind` may be written in this language.
    pub fn fits(self, kind: SiemKind) -> bool {
        matches!(
            (kind, self),
            (SiemKind::Splunk, Language::Spl)
                | (SiemKind::Sentinel, Language::Kql)
                | (
                    SiemKind::Elastic,
                    Language::Kuery | Language::Eql | Language::Esql
                )
        )
    }
}

/// Everything validation looks at in a rule version.
#[derive(Debug, Clone)]
pub struct RuleDraft<'a> {
    /// Target SIEM.
    pub siem_kind: SiemKind,
    /// Query language.
    pub language: Language,
    /// Title.
    pub title: &'a str,
    /// The query.
    pub query: &'a str,
    /// Schedule (canonical form).
    pub schedule: &'a Schedule,
    /// ATT&CK technique tags.
    pub mitre: &'a [String],
}

/// Validates a rule draft: query syntax for its language, refused commands,
/// costly patterns, schedule and ATT&CK tags.
pub fn validate(d: &RuleDraft<'_>) -> Report {
    let mut r = Report::default();
    if !d.language.fits(d.siem_kind) {
        r.error(Diagnostic::field(
            "language",
            "language_mismatch",
            format!(
                "{} rules cannot be written in {}; use {}",
                d.siem_kind.as_str(),
                d.language.as_str(),
                match d.siem_kind {
                    SiemKind::Splunk => "spl",
                    SiemKind::Sentinel => "kql",
                    SiemKind::Elastic => "kuery, eql or esql",
                }
            ),
        ));
    }
    r.extend(validate_query(d.language, d.query));
    r.extend(schedule::validate(d.siem_kind, d.schedule));
    if d.mitre.len() > MAX_MITRE_TAGS {
        r.error(Diagnostic::field(
            "mitre",
            "too_many_tags",
            format!("at most {MAX_MITRE_TAGS} ATT&CK tags"),
        ));
    }
    for (i, t) in d.mitre.iter().enumerate() {
        if !valid_technique(t) {
            r.error(Diagnostic::field(
                "mitre",
                "invalid_mitre_tag",
                format!(
                    "tag {} ({:?}) is not an ATT&CK technique id like T1059 or T1059.001",
                    i + 1,
                    truncate(t, 40)
                ),
            ));
        }
    }
    r
}

/// Validates a query alone.
pub fn validate_query(language: Language, query: &str) -> Report {
    let mut r = Report::default();
    if query.trim().is_empty() {
        r.error(Diagnostic::field(
            "query",
            "empty_query",
            "query must not be empty",
        ));
        return r;
    }
    if query.len() > MAX_QUERY_BYTES {
        r.error(Diagnostic::field(
            "query",
            "query_too_long",
            format!("query is {} bytes; at most {MAX_QUERY_BYTES}", query.len()),
        ));
        return r;
    }
    if let Some(pos) = query
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        .map(|(i, _)| i)
    {
        r.error(Diagnostic::at(
            query,
            pos,
            "control_character",
            "query contains a control character",
        ));
        return r;
    }
    match language {
        Language::Spl => spl::check(query, &mut r),
        Language::Kql => kql::check(query, &mut r),
        Language::Kuery => elastic::check_kuery(query, &mut r),
        Language::Eql => elastic::check_eql(query, &mut r),
        Language::Esql => elastic::check_esql(query, &mut r),
    }
    r
}

/// At most `n` characters of `s`, for quoting user input in messages.
pub(crate) fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
