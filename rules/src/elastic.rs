//! Elastic Security: KQL ("kuery") for `query` rules, EQL and ES|QL.
//! The agent picks the Kibana rule type from the query's form, so the form
//! must agree with the declared language (see `form_language`).

use crate::Language;
use crate::diag::{Diagnostic, Report};
use crate::scan::{self, Syntax};

const KUERY: Syntax = Syntax {
    single_quote: false,
    triple_quote: false,
    backtick: false,
    triple_backtick_comment: false,
    line_comment: false,
    block_comment: false,
};

const EQL: Syntax = Syntax {
    single_quote: true,
    triple_quote: true,
    backtick: true,
    triple_backtick_comment: false,
    line_comment: true,
    block_comment: true,
};

const ESQL: Syntax = Syntax {
    single_quote: false,
    triple_quote: true,
    backtick: true,
    triple_backtick_comment: false,
    line_comment: true,
    block_comment: true,
};

/// EQL pipes.
const EQL_PIPES: &[&str] = &[
    "head",
    "tail",
    "filter",
    "unique",
    "unique_count",
    "count",
    "sample",
];

/// ES|QL processing commands.
const ESQL_COMMANDS: &[&str] = &[
    "where",
    "eval",
    "stats",
    "keep",
    "drop",
    "rename",
    "sort",
    "limit",
    "dissect",
    "grok",
    "enrich",
    "mv_expand",
    "lookup",
    "inlinestats",
    "inline",
    "change_point",
    "completion",
    "fork",
    "rerank",
    "sample",
    "fuse",
];

/// ES|QL source commands.
const ESQL_SOURCES: &[&str] = &["from", "row", "show", "ts", "metrics"];

/// The language the agent will deploy `q` as (mirrors the agent's
/// `rule_type`): `FROM ` → ES|QL; `<category> where` or `sequence` → EQL;
/// anything else → KQL.
pub(crate) fn form_language(q: &str) -> Language {
    let lower = q.trim_start().to_ascii_lowercase();
    if lower.starts_with("from ") {
        return Language::Esql;
    }
    let mut words = lower.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    let category =
        !first.is_empty() && first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first == "sequence" || (category && second == "where") {
        return Language::Eql;
    }
    Language::Kuery
}

fn form_matches(q: &str, want: Language, r: &mut Report) -> bool {
    let got = form_language(q);
    if got != want {
        let hint = match want {
            Language::Esql => "an ES|QL query starts with `FROM <index>`",
            Language::Eql => "an EQL query starts with `<event category> where` or `sequence`",
            _ => "a KQL query must not start with `FROM ` or `<word> where`",
        };
        r.error(Diagnostic::at(
            q,
            q.len() - q.trim_start().len(),
            "language_mismatch",
            format!(
                "the query reads as {} but the rule says {}: {hint}",
                got.as_str(),
                want.as_str()
            ),
        ));
        return false;
    }
    true
}

/// Checks a Kibana KQL query.
pub(crate) fn check_kuery(q: &str, r: &mut Report) {
    let s = scan::scan(q, KUERY, r);
    if !r.is_ok() || !form_matches(q, Language::Kuery, r) {
        return;
    }
    if let Some(&p) = s.pipes.first() {
        r.error(Diagnostic::at(
            q,
            p,
            "unexpected_pipe",
            "KQL has no pipes; use EQL or ES|QL for pipelines",
        ));
    }
    for (pos, w) in scan::words(&s.masked, 0) {
        let value = w
            .split_once(':')
            .map_or(w, |(_, v)| v)
            .trim_start_matches('(');
        if value.starts_with('*') && value.len() > 1 {
            r.warn(Diagnostic::at(
                q,
                pos,
                "leading_wildcard",
                "a value starting with * cannot use the index and scans every document",
            ));
        }
    }
    if q.trim() == "*" || q.trim() == "*:*" {
        r.warn(Diagnostic::field(
            "query",
            "match_all",
            "the query matches every document",
        ));
    }
}

/// Checks an EQL query.
pub(crate) fn check_eql(q: &str, r: &mut Report) {
    let s = scan::scan(q, EQL, r);
    if !r.is_ok() || !form_matches(q, Language::Eql, r) {
        return;
    }
    for (n, (off, stage)) in s.stages().into_iter().enumerate() {
        if n == 0 {
            continue;
        }
        let Some((wpos, word)) = scan::first_word(stage, off) else {
            r.error(Diagnostic::at(
                q,
                off,
                "empty_stage",
                "empty pipe stage after `|`",
            ));
            continue;
        };
        if !EQL_PIPES.contains(&word.to_ascii_lowercase().as_str()) {
            r.error(Diagnostic::at(
                q,
                wpos,
                "unknown_command",
                format!(
                    "`{}` is not an EQL pipe (head, tail, filter, unique, unique_count, count, sample)",
                    crate::truncate(word, 40)
                ),
            ));
        }
    }
    for l in &s.literals {
        if l.body.starts_with('*') && l.body.len() > 1 {
            r.warn(Diagnostic::at(
                q,
                l.start,
                "leading_wildcard",
                "a pattern starting with * cannot use the index and scans every event",
            ));
        }
    }
    if q.trim_start()
        .to_ascii_lowercase()
        .starts_with("any where true")
    {
        r.warn(Diagnostic::field(
            "query",
            "match_all",
            "the query matches every event",
        ));
    }
}

/// Checks an ES|QL query. ES|QL has no command that writes or deletes data;
/// the data-moving one is `ENRICH`'s policy execution, which is not a query
/// command, so nothing is refused beyond unknown commands.
pub(crate) fn check_esql(q: &str, r: &mut Report) {
    let s = scan::scan(q, ESQL, r);
    if !r.is_ok() || !form_matches(q, Language::Esql, r) {
        return;
    }
    for (n, (off, stage)) in s.stages().into_iter().enumerate() {
        let Some((wpos, word)) = scan::first_word(stage, off) else {
            r.error(Diagnostic::at(
                q,
                off,
                "empty_stage",
                "empty pipe stage after `|`",
            ));
            continue;
        };
        let lower = word.to_ascii_lowercase();
        if n == 0 {
            if !ESQL_SOURCES.contains(&lower.as_str()) {
                r.error(Diagnostic::at(
                    q,
                    wpos,
                    "invalid_source",
                    "an ES|QL query starts with FROM",
                ));
            }
            let indices = stage.trim_start().get(word.len()..).unwrap_or_default();
            let first = indices.split_whitespace().next().unwrap_or_default();
            if first.split(',').any(|i| i == "*" || i == "*:*") {
                r.warn(Diagnostic::at(
                    q,
                    wpos,
                    "all_indexes",
                    "FROM * reads every index; name the indexes this detection needs",
                ));
            }
            continue;
        }
        if !ESQL_COMMANDS.contains(&lower.as_str()) {
            r.error(Diagnostic::at(
                q,
                wpos,
                "unknown_command",
                format!(
                    "`{}` is not a known ES|QL command",
                    crate::truncate(word, 40)
                ),
            ));
        }
    }
    for l in &s.literals {
        if l.body.starts_with('*') && l.body.len() > 1 {
            r.warn(Diagnostic::at(
                q,
                l.start,
                "leading_wildcard",
                "a LIKE pattern starting with * cannot use the index and scans every document",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Language, validate_query};

    fn codes(l: Language, q: &str) -> (Vec<&'static str>, Vec<&'static str>) {
        let r = validate_query(l, q);
        (
            r.errors.iter().map(|d| d.code).collect(),
            r.warnings.iter().map(|d| d.code).collect(),
        )
    }

    #[test]
    fn good_queries_pass_clean() {
        for (l, q) in [
            (
                Language::Kuery,
                "event.code:4625 and user.name:(alice or bob)",
            ),
            (
                Language::Kuery,
                "process.name:\"cmd.exe\" and not host.name:dev*",
            ),
            (
                Language::Eql,
                "process where process.name == \"cmd.exe\" | head 5",
            ),
            (
                Language::Eql,
                "sequence by host.id [process where true] [network where destination.port == 4444]",
            ),
            (
                Language::Esql,
                "FROM logs-* | WHERE event.code == \"4625\" | STATS n = COUNT(*) BY user.name | WHERE n > 5",
            ),
        ] {
            let (e, w) = codes(l, q);
            assert!(e.is_empty() && w.is_empty(), "{q}: {e:?} {w:?}");
        }
    }

    #[test]
    fn language_must_match_the_form() {
        let (e, _) = codes(Language::Kuery, "FROM logs-* | LIMIT 1");
        assert_eq!(e, ["language_mismatch"]);
        let (e, _) = codes(Language::Esql, "process where true");
        assert_eq!(e, ["language_mismatch"]);
        let (e, _) = codes(Language::Eql, "event.code:1");
        assert_eq!(e, ["language_mismatch"]);
    }

    #[test]
    fn unknown_commands_and_pipes() {
        let r = validate_query(Language::Esql, "FROM logs-*\n| WHERE x > 1\n| DELETE");
        assert_eq!(r.errors[0].code, "unknown_command");
        assert_eq!((r.errors[0].line, r.errors[0].column), (Some(3), Some(3)));
        let (e, _) = codes(Language::Eql, "process where true | sort x");
        assert_eq!(e, ["unknown_command"]);
        let (e, _) = codes(Language::Kuery, "a:1 | b");
        assert_eq!(e, ["unexpected_pipe"]);
    }

    #[test]
    fn costly_patterns_warn() {
        let (_, w) = codes(Language::Kuery, "user.name:*admin");
        assert_eq!(w, ["leading_wildcard"]);
        let (_, w) = codes(Language::Esql, "FROM * | WHERE user.name LIKE \"*admin\"");
        assert_eq!(w, ["all_indexes", "leading_wildcard"]);
        let (_, w) = codes(Language::Eql, "process where process.name : \"*cmd.exe\"");
        assert_eq!(w, ["leading_wildcard"]);
    }
}
