//! The match condition a rule test counts with.
//!
//! A test run injects sample events (tagged `picket_test`) and counts those
//! that match the rule. The agents count with a condition in each SIEM's
//! filter form (Splunk search terms, a KQL predicate, a Lucene query string),
//! bounded by the connector to the test index or table, the tag and the
//! injected time window. This module derives that condition from the rule's
//! query:
//!
//! - SPL: the terms of the first (search) stage and of later `search`
//!   stages, without `index=`/`sourcetype=` terms (test events live in the
//!   test index). Transforming stages (`stats`, `where` on aggregates...)
//!   are not exercised by tests.
//! - KQL: the predicates of the `where` stages joined with `and`; the source
//!   table is replaced by the connection's test table.
//! - Elastic KQL: the query itself.
//! - EQL: the event query (`<category> where <condition>`), without pipes;
//!   the connector runs it with `_eql/search` on the test index. Sequences
//!   and samples are not supported by rule tests.
//! - ES|QL: `FROM * | ...` with the query's row-level stages (`WHERE`,
//!   `EVAL`, `RENAME`, `DISSECT`, `GROK`, `MV_EXPAND`, `ENRICH`) up to its
//!   first `STATS`; the connector replaces the source with the test index
//!   and counts with `STATS ... COUNT(*)`. Projection and paging stages
//!   (`KEEP`, `DROP`, `SORT`, `LIMIT`) would only cap the count: dropped.

use crate::Language;
use crate::scan;

/// The condition to count test matches with, or why there is none.
///
/// # Errors
/// A message for the author when the query has no form tests can count with.
pub fn test_filter(language: Language, query: &str) -> Result<String, String> {
    match language {
        Language::Spl => spl(query),
        Language::Kql => kql(query),
        Language::Kuery => Ok(query.trim().to_owned()),
        Language::Eql => eql(query),
        Language::Esql => esql(query),
    }
}

/// The query a preview counts with on the SIEM's own data (the expected
/// alert volume): like [`test_filter`], but keeping the rule's source (SPL
/// `index=`/`sourcetype=`, the KQL table, the ES|QL `FROM`), since the
/// preview searches where the rule searches. SPL: the first stage and
/// later `search` stages; KQL: the table and its `where` stages before the
/// first `summarize`; ES|QL: `FROM` and the row-level stages up to the first
/// `STATS`. Kibana KQL and EQL rules search the space's default index
/// patterns, which the rule model does not carry: no preview.
///
/// # Errors
/// A message saying why this query gets no preview.
pub fn preview_query(language: Language, query: &str) -> Result<String, String> {
    match language {
        Language::Spl => {
            let stages = top_level_stages(query);
            let first = stages.first().map(|s| s.trim()).unwrap_or_default();
            if first.is_empty() {
                return Err("the query starts with a generating command; no preview".to_owned());
            }
            let mut out = vec![first.to_owned()];
            for stage in stages.iter().skip(1) {
                let s = stage.trim();
                if s.starts_with("search ") {
                    out.push(s.to_owned());
                }
            }
            Ok(out.join(" | "))
        }
        Language::Kql => {
            let body = query
                .rsplit(';')
                .find(|s| !s.trim().is_empty())
                .unwrap_or(query);
            let stages = top_level_stages(body);
            let table = stages.first().map(|s| s.trim()).unwrap_or_default();
            if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err("the query does not start with a table; no preview".to_owned());
            }
            let mut out = vec![table.to_owned()];
            for stage in stages.iter().skip(1) {
                let s = stage.trim();
                if s.starts_with("summarize") {
                    break;
                }
                if s.starts_with("where ") {
                    out.push(s.to_owned());
                }
            }
            Ok(out.join(" | "))
        }
        Language::Esql => {
            let stages = top_level_stages(query);
            let from = stages.first().map(|s| s.trim()).unwrap_or_default();
            if !from.to_ascii_lowercase().starts_with("from ") {
                return Err("the query has no `FROM` source".to_owned());
            }
            let filter = esql(query)?;
            Ok(filter.replacen("FROM *", from, 1))
        }
        Language::Kuery | Language::Eql => Err(format!(
            "{} rules search the Kibana space's default index patterns, which Picket does not know; no preview",
            language.as_str()
        )),
    }
}

fn eql(query: &str) -> Result<String, String> {
    let stages = top_level_stages(query);
    let first = stages.first().map(|s| s.trim()).unwrap_or_default();
    let lower = first.to_ascii_lowercase();
    if lower.starts_with("sequence") || lower.starts_with("sample") {
        return Err(
            "rule tests support EQL event queries (`<category> where <condition>`), not sequences or samples"
                .to_owned(),
        );
    }
    let mut words = lower.split_whitespace();
    let category = words.next().unwrap_or_default();
    if category.is_empty()
        || !category
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        || words.next() != Some("where")
    {
        return Err(
            "the query is not an EQL event query (`<category> where <condition>`)".to_owned(),
        );
    }
    Ok(first.to_owned())
}

fn esql(query: &str) -> Result<String, String> {
    const ROW_LEVEL: [&str; 7] = [
        "where",
        "eval",
        "rename",
        "dissect",
        "grok",
        "mv_expand",
        "enrich",
    ];
    let stages = top_level_stages(query);
    let mut out = vec!["FROM *".to_owned()];
    let mut has_where = false;
    for stage in stages.iter().skip(1) {
        let s = stage.trim();
        let command = s
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if command == "stats" || command == "inlinestats" {
            break;
        }
        if ROW_LEVEL.contains(&command.as_str()) {
            has_where |= command == "where";
            out.push(s.to_owned());
        }
    }
    if !stages
        .first()
        .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("from "))
    {
        return Err("the query has no `FROM` source".to_owned());
    }
    if !has_where {
        return Err(
            "the query has no `WHERE` stage before its first `STATS` for tests to match".to_owned(),
        );
    }
    Ok(out.join(" | "))
}

fn top_level_stages(query: &str) -> Vec<String> {
    // Pipes inside quotes or brackets do not split stages.
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut cur = String::new();
    let mut escaped = false;
    for c in query.chars() {
        if let Some(q) = quote {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '|' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

fn spl(query: &str) -> Result<String, String> {
    let stages = top_level_stages(query);
    let mut terms = Vec::new();
    for (n, stage) in stages.iter().enumerate() {
        let s = stage.trim();
        let body = if n == 0 {
            s
        } else if let Some(rest) = s.strip_prefix("search ") {
            rest
        } else {
            continue;
        };
        for (_, w) in scan::words(body, 0) {
            let lower = w.to_ascii_lowercase();
            if lower.starts_with("index=") || lower.starts_with("sourcetype=") {
                continue;
            }
            terms.push(w.to_owned());
        }
    }
    if terms.is_empty() {
        return Err("the query has no search terms for tests to match (the first stage and `search` stages give them)".to_owned());
    }
    Ok(terms.join(" "))
}

fn kql(query: &str) -> Result<String, String> {
    // Drop `let` statements: tests count on the final tabular expression.
    let body = query
        .rsplit(';')
        .find(|s| !s.trim().is_empty())
        .unwrap_or(query);
    let stages = top_level_stages(body);
    let mut preds = Vec::new();
    for (n, stage) in stages.iter().enumerate() {
        let s = stage.trim();
        if n == 0 {
            // A bare predicate (no table) is itself the condition.
            if s.contains("==") && !s.contains(' ') || s.contains(" == ") {
                preds.push(s.to_owned());
            }
            continue;
        }
        if let Some(p) = s
            .strip_prefix("where ")
            .or_else(|| s.strip_prefix("filter "))
        {
            preds.push(p.trim().to_owned());
        }
    }
    if preds.is_empty() {
        return Err("the query has no `where` predicate for tests to match".to_owned());
    }
    Ok(preds.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spl_terms() {
        assert_eq!(
            test_filter(Language::Spl, "index=main sourcetype=auth EventCode=4625 user=alice | stats count by user | search user=alice").as_deref(),
            Ok("EventCode=4625 user=alice user=alice")
        );
        assert!(test_filter(Language::Spl, "| tstats count").is_err());
    }

    #[test]
    fn kql_predicates() {
        assert_eq!(
            test_filter(Language::Kql, "SecurityEvent | where EventID == \"4625\" | where Account == \"alice\" | summarize count()").as_deref(),
            Ok("EventID == \"4625\" and Account == \"alice\"")
        );
        assert_eq!(
            test_filter(
                Language::Kql,
                "EventID == \"4625\" and Account == \"alice\""
            )
            .as_deref(),
            Ok("EventID == \"4625\" and Account == \"alice\"")
        );
        assert!(test_filter(Language::Kql, "SecurityEvent | take 5").is_err());
    }

    #[test]
    fn elastic() {
        assert_eq!(
            test_filter(Language::Kuery, " event.code:4625 ").as_deref(),
            Ok("event.code:4625")
        );
    }

    #[test]
    fn preview_queries_keep_the_source() {
        assert_eq!(
            preview_query(
                Language::Spl,
                "index=wineventlog EventCode=4625 | stats count by user | search user=alice"
            )
            .as_deref(),
            Ok("index=wineventlog EventCode=4625 | search user=alice")
        );
        assert_eq!(
            preview_query(
                Language::Kql,
                "SecurityEvent | where EventID == 4625 | summarize n = count() by Account | where n > 5"
            )
            .as_deref(),
            Ok("SecurityEvent | where EventID == 4625")
        );
        assert_eq!(
            preview_query(
                Language::Esql,
                "FROM logs-* | WHERE event.code == \"4625\" | LIMIT 5"
            )
            .as_deref(),
            Ok("FROM logs-* | WHERE event.code == \"4625\"")
        );
        assert!(preview_query(Language::Kuery, "event.code:4625").is_err());
        assert!(preview_query(Language::Eql, "process where true").is_err());
        assert!(preview_query(Language::Spl, "| tstats count").is_err());
    }

    #[test]
    fn eql_event_queries() {
        assert_eq!(
            test_filter(
                Language::Eql,
                "process where process.name == \"mimikatz.exe\" | head 5"
            )
            .as_deref(),
            Ok("process where process.name == \"mimikatz.exe\"")
        );
        assert!(
            test_filter(
                Language::Eql,
                "sequence by host.id [process where true] [network where true]"
            )
            .is_err()
        );
        assert!(test_filter(Language::Eql, "process.name == \"x\"").is_err());
    }

    #[test]
    fn esql_row_level_stages_up_to_stats() {
        assert_eq!(
            test_filter(
                Language::Esql,
                "FROM logs-* | WHERE event.code == \"4625\" | EVAL u = user.name | KEEP u | WHERE u == \"alice\" | STATS n = COUNT(*) BY u | WHERE n > 5 | LIMIT 10"
            )
            .as_deref(),
            Ok("FROM * | WHERE event.code == \"4625\" | EVAL u = user.name | WHERE u == \"alice\"")
        );
        assert!(test_filter(Language::Esql, "FROM logs-* | STATS COUNT(*)").is_err());
        assert!(test_filter(Language::Esql, "ROW a = 1 | WHERE a == 1").is_err());
    }
}
