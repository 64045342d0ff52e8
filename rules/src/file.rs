//! Rules as files: one rule per TOML file, with its test cases, so a team
//! can keep rules in git. Parsing is bounded (file size, counts, lengths)
//! and unknown keys are refused, so a typo is an error rather than silently
//! dropped.
//!
//! ```toml
//! format = 1
//! id = "0190..."               # optional: written by export; re-import adds a version
//! name = "Brute force against one account"
//! siem = "splunk"              # splunk | sentinel | elastic
//! language = "spl"             # optional: spl | kql | kuery | eql | esql
//! severity = "high"            # info | low | medium | high | critical
//! description = "Five failed logons for one user in five minutes."
//! mitre = ["T1110", "T1110.001"]
//! query = 'EventCode=4625 user=alice'
//!
//! [schedule]                   # cron + earliest (+ latest, default now), or
//! cron = "*/5 * * * *"         # frequency + lookback in the SIEM's own form
//! earliest = "-5m"             # (Sentinel PT5M / PT1H; Elastic 5m / now-6m)
//!
//! [[tests]]
//! name = "alice's failure matches"
//! expect = "match"             # match | no_match
//! events = [{ EventCode = "4625", user = "alice" }]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schedule::{Schedule, schedule_from_native};
use crate::{Diagnostic, Language, SiemKind};

/// Largest rule file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 256 * 1024;
/// Most test cases per rule.
pub const MAX_TESTS: usize = 50;
/// Most events per test case.
pub const MAX_EVENTS_PER_TEST: usize = 100;
/// Most fields per event.
pub const MAX_FIELDS: usize = 64;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME: usize = 128;
/// Longest field value, in bytes.
pub const MAX_FIELD_VALUE: usize = 4096;

/// One rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// File format version; only 1 exists.
    pub format: u32,
    /// The server's rule id, written by export: a re-import with it adds a
    /// version to that rule instead of creating a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name (title) of the rule.
    pub name: String,
    /// Target SIEM: `splunk`, `sentinel`, `elastic`.
    pub siem: String,
    /// Query language; defaults to the SIEM's usual one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `info`, `low`, `medium`, `high`, `critical`.
    pub severity: String,
    /// Longer description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// ATT&CK technique ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mitre: Vec<String>,
    /// The query.
    pub query: String,
    /// When it runs.
    pub schedule: FileSchedule,
    /// Positive and negative test cases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestCase>,
}

/// The schedule as written in a file: canonical or native.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSchedule {
    /// Five-field cron.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Window start (Splunk time modifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest: Option<String>,
    /// Window end; `now` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// Native frequency (Sentinel ISO 8601, Elastic interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<String>,
    /// Native lookback (Sentinel ISO 8601, Elastic `now-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
}

/// A test case: events that must (or must not) make the rule match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Name, unique within the rule.
    pub name: String,
    /// `match` (positive) or `no_match` (negative).
    pub expect: Expect,
    /// Sample events: flat maps of field name to string value.
    pub events: Vec<BTreeMap<String, String>>,
}

/// What a test case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// At least one event matches.
    #[default]
    Match,
    /// No event matches.
    NoMatch,
}

impl Expect {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Match => "match",
            Expect::NoMatch => "no_match",
        }
    }
}

/// Why a rule file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// The file is larger than [`MAX_FILE_BYTES`].
    TooLarge(usize),
    /// Not TOML, or not the rule shape: the parser's message, with its line and column.
    Syntax {
        /// 1-based line, when known.
        line: Option<u32>,
        /// 1-based column, when known.
        column: Option<u32>,
        /// What is wrong.
        message: String,
    },
    /// Parsed, but a field is invalid.
    Invalid(Vec<Diagnostic>),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::TooLarge(n) => write!(f, "rule file is {n} bytes; at most {MAX_FILE_BYTES}"),
            FileError::Syntax {
                line: Some(l),
                column: Some(c),
                message,
            } => {
                write!(f, "line {l} column {c}: {message}")
            }
            FileError::Syntax { message, .. } => f.write_str(message),
            FileError::Invalid(ds) => {
                let parts: Vec<String> = ds.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join("; "))
            }
        }
    }
}

impl std::error::Error for FileError {}

/// A rule file, parsed and checked for shape (not yet validated as a rule:
/// see [`crate::validate`]), with its schedule in canonical form.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    /// The file as written.
    pub file: RuleFile,
    /// Target SIEM.
    pub siem: SiemKind,
    /// Language (given or the SIEM's default).
    pub language: Language,
    /// The schedule, canonical.
    pub schedule: Schedule,
}

/// Parses a rule file.
///
/// # Errors
/// [`FileError`] saying precisely what is wrong and where.
pub fn parse_file(text: &str) -> Result<ParsedFile, FileError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge(text.len()));
    }
    let file: RuleFile = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((None, None), |s| {
            let before = text.get(..s.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (u32::try_from(line).ok(), u32::try_from(col).ok())
        });
        FileError::Syntax {
            line,
            column,
            message: e.message().to_owned(),
        }
    })?;
    let mut errs = Vec::new();
    if file.format != 1 {
        errs.push(Diagnostic::field(
            "format",
            "unsupported_format",
            format!("format {} is not supported; use 1", file.format),
        ));
    }
    let siem = SiemKind::parse(&file.siem);
    if siem.is_none() {
        errs.push(Diagnostic::field(
            "siem",
            "invalid_field",
            "siem must be splunk, sentinel or elastic",
        ));
    }
    let language = match (&file.language, siem) {
        (Some(l), _) => Language::parse(l).or_else(|| {
            errs.push(Diagnostic::field(
                "language",
                "invalid_field",
                "language must be spl, kql, kuery, eql or esql",
            ));
            None
        }),
        (None, Some(k)) => Some(k.default_language()),
        (None, None) => None,
    };
    check_tests(&file.tests, &mut errs);
    let schedule = siem.and_then(|k| match canonical_schedule(k, &file.schedule) {
        Ok(s) => Some(s),
        Err(mut e) => {
            errs.append(&mut e);
            None
        }
    });
    match (siem, language, schedule) {
        (Some(siem), Some(language), Some(schedule)) if errs.is_empty() => Ok(ParsedFile {
            file,
            siem,
            language,
            schedule,
        }),
        _ => Err(FileError::Invalid(errs)),
    }
}

/// The canonical schedule of a file's `[schedule]`.
///
/// # Errors
/// Diagnostics naming the schedule field at fault.
pub fn canonical_schedule(kind: SiemKind, s: &FileSchedule) -> Result<Schedule, Vec<Diagnostic>> {
    match (&s.cron, &s.frequency) {
        (Some(cron), None) if s.lookback.is_none() => Ok(Schedule {
            cron: cron.clone(),
            earliest: s.earliest.clone().unwrap_or_else(|| "-5m".to_owned()),
            latest: s.latest.clone().unwrap_or_else(|| "now".to_owned()),
        }),
        (None, Some(freq)) if s.earliest.is_none() && s.latest.is_none() => {
            let Some(lookback) = &s.lookback else {
                return Err(vec![Diagnostic::field(
                    "lookback",
                    "invalid_schedule",
                    "frequency needs a lookback",
                )]);
            };
            schedule_from_native(kind, freq, lookback)
        }
        _ => Err(vec![Diagnostic::field(
            "schedule",
            "invalid_schedule",
            "give either cron (with earliest and latest) or frequency and lookback, not both",
        )]),
    }
}

/// Bounds on test cases, shared by files and the API.
pub fn check_tests(tests: &[TestCase], errs: &mut Vec<Diagnostic>) {
    if tests.len() > MAX_TESTS {
        errs.push(Diagnostic::field(
            "tests",
            "too_many_tests",
            format!("at most {MAX_TESTS} test cases per rule"),
        ));
        return;
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in tests.iter().enumerate() {
        let n = i + 1;
        if t.name.trim().is_empty()
            || t.name.chars().count() > 200
            || t.name.chars().any(char::is_control)
        {
            errs.push(Diagnostic::field(
                "tests",
                "invalid_test",
                format!("test {n}: name must be 1-200 characters without control characters"),
            ));
        } else if !names.insert(t.name.as_str()) {
            errs.push(Diagnostic::field(
                "tests",
                "duplicate_test",
                format!("test {n}: another test is already named {:?}", t.name),
            ));
        }
        if t.events.is_empty() || t.events.len() > MAX_EVENTS_PER_TEST {
            errs.push(Diagnostic::field(
                "tests",
                "invalid_test",
                format!("test {n}: needs 1 to {MAX_EVENTS_PER_TEST} events"),
            ));
        }
        for (j, e) in t.events.iter().enumerate() {
            let bad = e.len() > MAX_FIELDS
                || e.is_empty()
                || e.iter().any(|(k, v)| {
                    k.is_empty()
                        || k.len() > MAX_FIELD_NAME
                        || !k.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@')
                        })
                        || v.len() > MAX_FIELD_VALUE
                        || v.chars().any(|c| c.is_control() && c != '\t')
                });
            if bad {
                errs.push(Diagnostic::field(
                    "tests",
                    "invalid_test",
                    format!(
                        "test {n} event {}: 1-{MAX_FIELDS} fields, names of [A-Za-z0-9_.@-] up to {MAX_FIELD_NAME} bytes, values up to {MAX_FIELD_VALUE} bytes without control characters",
                        j + 1
                    ),
                ));
            }
        }
    }
}

/// Writes a rule as a file.
///
/// # Errors
/// Only if the rule cannot be represented as TOML (it always can when it
/// came from [`parse_file`] or the server).
pub fn to_file(rule: &RuleFile) -> Result<String, FileError> {
    toml::to_string_pretty(rule).map_err(|e| FileError::Syntax {
        line: None,
        column: None,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
format = 1
name = "Brute force"
siem = "sentinel"
severity = "high"
mitre = ["T1110"]
query = 'SecurityEvent | where EventID == 4625'

[schedule]
frequency = "PT5M"
lookback = "PT1H"

[[tests]]
name = "failure matches"
expect = "match"
events = [{ EventID = "4625", Account = "alice" }]

[[tests]]
name = "success does not"
expect = "no_match"
events = [{ EventID = "4624" }]
"#;

    #[test]
    fn parses_and_round_trips() {
        let p = parse_file(GOOD).unwrap();
        assert_eq!(p.siem, SiemKind::Sentinel);
        assert_eq!(p.language, Language::Kql);
        assert_eq!(p.schedule.cron, "*/5 * * * *");
        assert_eq!(p.file.tests.len(), 2);
        let text = to_file(&p.file).unwrap();
        let again = parse_file(&text).unwrap();
        assert_eq!(again.file, p.file);
    }

    #[test]
    fn hostile_files_are_refused_precisely() {
        let big = "#".repeat(MAX_FILE_BYTES + 1);
        assert!(matches!(parse_file(&big), Err(FileError::TooLarge(_))));
        let e = parse_file(&GOOD.replace("severity", "sevrity")).unwrap_err();
        assert!(matches!(e, FileError::Syntax { line: Some(5), .. }), "{e}");
        let e = parse_file("format = 1\nname = \"x").unwrap_err();
        assert!(matches!(e, FileError::Syntax { line: Some(2), .. }), "{e}");
        let e = parse_file(&GOOD.replace("\"sentinel\"", "\"qradar\"")).unwrap_err();
        assert!(e.to_string().contains("siem must be"), "{e}");
        let e = parse_file(&GOOD.replace("success does not", "failure matches")).unwrap_err();
        assert!(e.to_string().contains("duplicate_test"), "{e}");
        let e = parse_file(&GOOD.replace("Account = ", "\"bad key\" = ")).unwrap_err();
        assert!(e.to_string().contains("test 1 event 1"), "{e}");
        let e = parse_file(&GOOD.replace(
            "lookback = \"PT1H\"",
            "lookback = \"PT1H\"\ncron = \"* * * * *\"",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e = parse_file(&GOOD.replace("PT5M", "5 minutes")).unwrap_err();
        assert!(e.to_string().contains("frequency"), "{e}");
    }
}
