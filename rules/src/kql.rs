//! Kusto (Microsoft Sentinel): `let` statements, a tabular source, then
//! known operators after `|`. Control commands (`.drop`, `.set`...) and
//! plugins that reach outside the workspace are refused.

use crate::diag::{Diagnostic, Report};
use crate::scan::{self, Syntax};

const SYNTAX: Syntax = Syntax {
    single_quote: true,
    triple_quote: false,
    backtick: false,
    triple_backtick_comment: false,
    line_comment: true,
    block_comment: false,
};

/// Tabular operators a detection may use after `|`.
const OPERATORS: &[&str] = &[
    "as",
    "consume",
    "count",
    "distinct",
    "evaluate",
    "extend",
    "facet",
    "filter",
    "find",
    "fork",
    "getschema",
    "invoke",
    "join",
    "limit",
    "lookup",
    "make-series",
    "mv-apply",
    "mv-expand",
    "order",
    "parse",
    "parse-kv",
    "parse-where",
    "partition",
    "project",
    "project-away",
    "project-keep",
    "project-rename",
    "project-reorder",
    "range",
    "reduce",
    "render",
    "sample",
    "sample-distinct",
    "scan",
    "search",
    "serialize",
    "sort",
    "summarize",
    "take",
    "top",
    "top-hitters",
    "top-nested",
    "union",
    "where",
    "extend-schema",
];

/// Plugins (`evaluate <plugin>`) that send data out of the workspace or
/// query other systems.
const REFUSED_PLUGINS: &[&str] = &[
    "http_request",
    "http_request_post",
    "sql_request",
    "mysql_request",
    "postgresql_request",
    "cosmosdb_sql_request",
    "azure_digital_twins_query_request",
];

/// Checks a KQL query.
pub(crate) fn check(q: &str, r: &mut Report) {
    let s = scan::scan(q, SYNTAX, r);
    if !r.is_ok() {
        return;
    }
    // Control commands start with a dot; they change the database.
    for (pos, w) in scan::words(&s.masked, 0) {
        if w.starts_with('.')
            && w.len() > 1
            && w[1..].starts_with(|c: char| c.is_ascii_alphabetic())
        {
            let line_start = s
                .masked
                .get(..pos)
                .map_or(0, |b| b.rfind('\n').map_or(0, |i| i + 1));
            let before = s.masked.get(line_start..pos).unwrap_or_default();
            if before.trim().is_empty() || before.trim_end().ends_with(';') {
                r.error(Diagnostic::at(
                    q,
                    pos,
                    "refused_command",
                    format!(
                        "control command `{}` is refused in a detection: it changes the database",
                        crate::truncate(w, 40)
                    ),
                ));
            }
        }
        let lower = w.to_ascii_lowercase();
        if lower.starts_with("externaldata") {
            r.error(Diagnostic::at(
                q,
                pos,
                "refused_command",
                "`externaldata` is refused in a detection: it fetches data from outside the workspace",
            ));
        }
    }
    if !r.is_ok() {
        return;
    }
    // The statement that produces the result is the last one after `let`s.
    let body_start = last_statement(&s.masked);
    let stages = s.stages();
    for (n, (off, stage)) in stages.iter().enumerate() {
        if *off + stage.len() < body_start {
            continue;
        }
        let (at, text) = if n == 0 || *off < body_start {
            let skip = body_start.saturating_sub(*off);
            (off + skip, stage.get(skip..).unwrap_or_default())
        } else {
            (*off, *stage)
        };
        let Some((wpos, word)) = scan::first_word(text, at) else {
            r.error(Diagnostic::at(
                q,
                at,
                "empty_stage",
                "empty pipeline stage after `|`",
            ));
            continue;
        };
        let is_source = n == 0 || *off < body_start;
        if is_source {
            source(q, wpos, word, text, r);
            continue;
        }
        let op = word.to_ascii_lowercase();
        if !OPERATORS.contains(&op.as_str()) {
            r.error(Diagnostic::at(
                q,
                wpos,
                "unknown_command",
                format!(
                    "`{}` is not a known KQL operator",
                    crate::truncate(word, 40)
                ),
            ));
            continue;
        }
        if op == "evaluate" {
            let plugin = text
                .trim_start()
                .get("evaluate".len()..)
                .unwrap_or_default()
                .trim_start();
            let name: String = plugin
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if REFUSED_PLUGINS.contains(&name.to_ascii_lowercase().as_str()) {
                r.error(Diagnostic::at(
                    q,
                    wpos,
                    "refused_command",
                    format!("plugin `{name}` is refused in a detection: it reaches outside the workspace"),
                ));
            }
        }
        if op == "union" || op == "search" || op == "find" {
            wide(q, wpos, &op, text, r);
        }
        contains_wildcards(q, &s.literals, r);
    }
}

/// The byte offset where the final (tabular) statement starts: after the
/// last `;` that ends a `let` (or other) statement.
fn last_statement(masked: &str) -> usize {
    let mut depth = 0i32;
    let mut last = 0;
    for (i, c) in masked.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ';' if depth == 0 => last = i + 1,
            _ => {}
        }
    }
    // A trailing `;` after the final statement is allowed.
    if masked.get(last..).is_some_and(|s| s.trim().is_empty()) && last > 0 {
        let head = masked.get(..last - 1).unwrap_or_default();
        return last_statement(head);
    }
    last
}

fn source(q: &str, wpos: usize, word: &str, text: &str, r: &mut Report) {
    let lower = word.to_ascii_lowercase();
    if matches!(lower.as_str(), "union" | "search" | "find") {
        wide(q, wpos, &lower, text, r);
        return;
    }
    if matches!(
        lower.as_str(),
        "print" | "datatable" | "range" | "let" | "materialize" | "view"
    ) {
        return;
    }
    let ok = word.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '_' | '-' | '.' | '(' | ')' | '\'' | '"' | '[' | ']' | ' ' | ':'
            )
    });
    if !ok || word.starts_with(|c: char| c.is_ascii_digit()) {
        r.error(Diagnostic::at(
            q,
            wpos,
            "invalid_source",
            format!(
                "a KQL query starts with a table name (e.g. SecurityEvent), `union`, `search`, `print` or `datatable`, not `{}`",
                crate::truncate(word, 40)
            ),
        ));
    }
}

/// `union *` / `search *` read every table in the workspace.
fn wide(q: &str, wpos: usize, op: &str, text: &str, r: &mut Report) {
    let rest = text.trim_start().get(op.len()..).unwrap_or_default();
    let mut args = rest
        .split([',', ' ', '\n', '\t'])
        .filter(|w| !w.is_empty() && !w.contains('='));
    if op == "union" && args.any(|a| a == "*" || a.starts_with('*'))
        || op != "union"
            && !rest.contains(" in ")
            && !rest.contains("in(")
            && !rest.contains("in (")
    {
        r.warn(Diagnostic::at(
            q,
            wpos,
            "all_tables",
            format!("`{op}` over every table scans the whole workspace; name the tables"),
        ));
    }
}

/// `"*foo"` in a KQL string is a literal asterisk, not a wildcard; a common
/// mistake carried over from SPL, and costly with `contains`.
fn contains_wildcards(q: &str, lits: &[scan::Literal], r: &mut Report) {
    for l in lits {
        if l.body.starts_with('*')
            && l.body.len() > 1
            && !r.warnings.iter().any(|w| w.code == "literal_wildcard")
        {
            r.warn(Diagnostic::at(
                q,
                l.start,
                "literal_wildcard",
                "KQL has no wildcards in strings: \"*...\" matches a literal asterisk; use endswith/contains/has",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Language, validate_query};

    fn codes(q: &str) -> (Vec<&'static str>, Vec<&'static str>) {
        let r = validate_query(Language::Kql, q);
        (
            r.errors.iter().map(|d| d.code).collect(),
            r.warnings.iter().map(|d| d.code).collect(),
        )
    }

    #[test]
    fn good_queries_pass_clean() {
        for q in [
            "SecurityEvent | where EventID == 4625 | summarize count() by Account | where count_ > 5",
            "let threshold = 5;\nlet users = dynamic(['a', 'b']);\nSigninLogs\n| where UserPrincipalName in (users) // who\n| summarize n = count() by bin(TimeGenerated, 5m)\n| where n > threshold",
            "union SecurityEvent, Syslog | where TimeGenerated > ago(1h) | project-away Computer",
            "EventID == \"4625\" and Account == \"alice\"",
            "DeviceProcessEvents | where ProcessCommandLine has_any (@\"C:\\tmp\", 'x') | mv-expand x | take 10",
        ] {
            let (e, w) = codes(q);
            assert!(e.is_empty() && w.is_empty(), "{q}: {e:?} {w:?}");
        }
    }

    #[test]
    fn refused() {
        for q in [
            ".drop table SecurityEvent",
            "let x = 1;\n.set-or-append T <| SecurityEvent",
            "SecurityEvent | evaluate http_request('https://evil.example')",
            "externaldata(x:string) [@'https://evil.example/a.csv'] | take 1",
        ] {
            let (e, _) = codes(q);
            assert!(e.contains(&"refused_command"), "{q}: {e:?}");
        }
    }

    #[test]
    fn unknown_operator_has_its_position() {
        let r = validate_query(Language::Kql, "SecurityEvent\n| wher EventID == 1");
        assert_eq!(r.errors[0].code, "unknown_command");
        assert_eq!((r.errors[0].line, r.errors[0].column), (Some(2), Some(3)));
    }

    #[test]
    fn costly_patterns_warn() {
        let (_, w) = codes("union * | where x == 1");
        assert_eq!(w, ["all_tables"]);
        let (_, w) = codes("search \"evil\"");
        assert_eq!(w, ["all_tables"]);
        let (_, w) = codes("SecurityEvent | where Account == \"*admin\"");
        assert_eq!(w, ["literal_wildcard"]);
    }

    #[test]
    fn unbalanced() {
        let (e, _) = codes("SecurityEvent | where (EventID == 1");
        assert_eq!(e, ["unbalanced_bracket"]);
        let (e, _) = codes("SecurityEvent | where Account == 'x");
        assert_eq!(e, ["unbalanced_quote"]);
    }
}
