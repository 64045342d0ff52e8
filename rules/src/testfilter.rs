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
//! - EQL and ES|QL: not supported by rule tests yet.

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
        Language::Eql | Language::Esql => Err(format!(
            "rule tests do not support {} queries yet; use a KQL query rule",
            language.as_str()
        )),
    }
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
        assert!(test_filter(Language::Eql, "process where true").is_err());
    }
}
