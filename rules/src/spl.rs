//! Splunk SPL: known commands, refused commands, costly patterns.
//! Subsearches (`[ ... ]`) are checked as pipelines of their own.

use crate::diag::{Diagnostic, Report};
use crate::scan::{self, Syntax};

const SYNTAX: Syntax = Syntax {
    single_quote: true,
    triple_quote: false,
    backtick: true,
    triple_backtick_comment: true,
    line_comment: false,
    block_comment: false,
};

/// Commands that delete data, write it elsewhere, send it out, or run
/// arbitrary code or searches: a detection rule must never do these.
const REFUSED: &[(&str, &str)] = &[
    ("delete", "deletes indexed events"),
    ("outputlookup", "writes a lookup table"),
    ("outputcsv", "writes a file on the search head"),
    ("outputtext", "writes to the index"),
    ("collect", "copies events into an index"),
    ("mcollect", "copies events into a metrics index"),
    ("meventcollect", "copies events into a metrics index"),
    ("tscollect", "writes a tsidx namespace"),
    ("sendemail", "sends results by email"),
    ("sendalert", "runs an alert action"),
    ("script", "runs an external script"),
    ("run", "runs an external script"),
    ("map", "runs a search per result row"),
    ("dbxoutput", "writes to an external database"),
    ("dump", "exports events to files"),
    ("sendlog", "forwards results elsewhere"),
];

/// Commands a detection may use (search, transforming, reporting).
const KNOWN: &[&str] = &[
    "abstract",
    "accum",
    "addcoltotals",
    "addinfo",
    "addtotals",
    "analyzefields",
    "anomalies",
    "anomalousvalue",
    "anomalydetection",
    "append",
    "appendcols",
    "appendpipe",
    "arules",
    "associate",
    "autoregress",
    "bin",
    "bucket",
    "bucketdir",
    "chart",
    "cluster",
    "cofilter",
    "concurrency",
    "contingency",
    "convert",
    "correlate",
    "datamodel",
    "dbinspect",
    "dedup",
    "delta",
    "diff",
    "erex",
    "eval",
    "eventcount",
    "eventstats",
    "extract",
    "kv",
    "fieldformat",
    "fields",
    "fieldsummary",
    "filldown",
    "fillnull",
    "findtypes",
    "foreach",
    "format",
    "from",
    "gentimes",
    "geom",
    "geomfilter",
    "geostats",
    "head",
    "highlight",
    "history",
    "iconify",
    "inputcsv",
    "inputlookup",
    "iplocation",
    "join",
    "kmeans",
    "kvform",
    "loadjob",
    "localize",
    "localop",
    "lookup",
    "makecontinuous",
    "makemv",
    "makeresults",
    "mcatalog",
    "metadata",
    "metasearch",
    "mpreview",
    "msearch",
    "mstats",
    "multikv",
    "multisearch",
    "mvcombine",
    "mvexpand",
    "nomv",
    "outlier",
    "pivot",
    "predict",
    "rangemap",
    "rare",
    "regex",
    "reltime",
    "rename",
    "replace",
    "require",
    "rest",
    "return",
    "reverse",
    "rex",
    "rtorder",
    "savedsearch",
    "search",
    "searchtxn",
    "selfjoin",
    "set",
    "setfields",
    "sichart",
    "sirare",
    "sistats",
    "sitimechart",
    "sitop",
    "sort",
    "spath",
    "stats",
    "strcat",
    "streamstats",
    "table",
    "tags",
    "tail",
    "timechart",
    "timewrap",
    "top",
    "transaction",
    "transpose",
    "trendline",
    "tstats",
    "typeahead",
    "typelearner",
    "typer",
    "union",
    "uniq",
    "untable",
    "walklex",
    "where",
    "x11",
    "xmlkv",
    "xmlunescape",
    "xpath",
    "xyseries",
    "fit",
    "apply",
    "inputintelligence",
];

/// Checks an SPL query.
pub(crate) fn check(q: &str, r: &mut Report) {
    let s = scan::scan(q, SYNTAX, r);
    if !r.is_ok() {
        return;
    }
    // The first stage without a leading pipe is an implicit `search`.
    let implicit = !q.trim_start().starts_with('|');
    pipeline(q, &s.masked, 0, implicit, r);
    for lit in &s.literals {
        if lit.body.starts_with('*')
            && lit.body.len() > 1
            && q.as_bytes().get(lit.start) == Some(&b'"')
        {
            r.warn(Diagnostic::at(
                q,
                lit.start,
                "leading_wildcard",
                "a value starting with * cannot use the index and scans every event",
            ));
        }
    }
}

/// Splits masked `text` at its own top-level pipes.
fn split_stages(text: &str) -> Vec<(usize, &str)> {
    let mut stages = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '|' if depth == 0 => {
                stages.push((start, text.get(start..i).unwrap_or_default()));
                start = i + 1;
            }
            _ => {}
        }
    }
    stages.push((start, text.get(start..).unwrap_or_default()));
    stages
}

/// Checks one pipeline: `text` is masked text starting at byte `base` of
/// `q`; `implicit_search` says its first stage has no command word.
fn pipeline(q: &str, text: &str, base: usize, implicit_search: bool, r: &mut Report) {
    let stages = split_stages(text);
    let many = stages.len() > 1;
    for (n, (off, stage)) in stages.into_iter().enumerate() {
        let at = base + off;
        let Some((wpos, word)) = scan::first_word(stage, at) else {
            // A leading `|` leaves an empty first stage; that is fine.
            if many && (n != 0 || implicit_search) {
                r.error(Diagnostic::at(
                    q,
                    at,
                    "empty_stage",
                    "empty pipeline stage between two `|`",
                ));
            }
            continue;
        };
        let implicit = n == 0 && implicit_search;
        let command = if implicit {
            "search".to_owned()
        } else {
            word.to_ascii_lowercase()
        };
        if let Some((_, why)) = REFUSED.iter().find(|(c, _)| *c == command) {
            r.error(Diagnostic::at(
                q,
                wpos,
                "refused_command",
                format!("`{command}` is refused in a detection: it {why}"),
            ));
        } else if !implicit && !KNOWN.contains(&command.as_str()) && !command.starts_with('`') {
            r.error(Diagnostic::at(
                q,
                wpos,
                "unknown_command",
                format!("`{}` is not a known SPL command", crate::truncate(word, 40)),
            ));
        }
        if command == "search" || command == "tstats" {
            costly_terms(q, stage, at, r);
        }
        subsearches(q, stage, at, r);
    }
}

/// Each `[ ... ]` that starts with a command word is a subsearch, checked as
/// a pipeline of its own (`[` also indexes multivalue fields in `eval`).
fn subsearches(q: &str, stage: &str, at: usize, r: &mut Report) {
    let mut depth = 0;
    let mut open = None;
    for (i, c) in stage.char_indices() {
        match c {
            '[' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            ']' => {
                depth -= 1;
                if depth == 0
                    && let Some(o) = open.take()
                {
                    let inner = stage.get(o + 1..i).unwrap_or_default();
                    let trimmed = inner.trim_start();
                    let first = scan::first_word(trimmed.trim_start_matches('|'), 0)
                        .map(|(_, w)| w.to_ascii_lowercase());
                    if let Some(w) = first
                        && (KNOWN.contains(&w.as_str()) || REFUSED.iter().any(|(c, _)| *c == w))
                    {
                        pipeline(q, inner, at + o + 1, false, r);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Warnings for search terms that defeat the index.
fn costly_terms(q: &str, stage: &str, at: usize, r: &mut Report) {
    for (pos, w) in scan::words(stage, at) {
        let lower = w.to_ascii_lowercase();
        let value = lower.split_once('=').map(|(_, v)| v);
        if lower == "index=*" || lower == "index=\"*\"" {
            r.warn(Diagnostic::at(
                q,
                pos,
                "all_indexes",
                "index=* searches every index; name the indexes this detection needs",
            ));
        } else if lower.starts_with("earliest=0") || lower == "alltime=true" {
            r.warn(Diagnostic::at(
                q,
                pos,
                "all_time_window",
                "earliest=0 searches all time on every run; bound the window",
            ));
        } else if let Some(v) = value {
            if v.starts_with('*') && v.len() > 1 && !v.starts_with("*\"") {
                r.warn(Diagnostic::at(
                    q,
                    pos,
                    "leading_wildcard",
                    "a value starting with * cannot use the index and scans every event",
                ));
            }
        } else if w.starts_with('*') && w.len() > 1 {
            r.warn(Diagnostic::at(
                q,
                pos,
                "leading_wildcard",
                "a term starting with * cannot use the index and scans every event",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Language, validate_query};

    fn codes(q: &str) -> (Vec<&'static str>, Vec<&'static str>) {
        let r = validate_query(Language::Spl, q);
        (
            r.errors.iter().map(|d| d.code).collect(),
            r.warnings.iter().map(|d| d.code).collect(),
        )
    }

    #[test]
    fn good_queries_pass_clean() {
        for q in [
            "index=main sourcetype=WinEventLog EventCode=4625 | stats count by user | where count > 5",
            "| tstats count from datamodel=Endpoint.Processes where Processes.process_name=\"cmd.exe\" by Processes.dest",
            "index=main [search index=threat | fields ip | format] | table _time ip",
            "index=main `my_macro(1)` | eval x=if(a==\"b\", 1, 0) | rex field=_raw \"user=(?<u>\\w+)\"",
            "index=main ```a comment | delete``` | head 10",
        ] {
            let (e, w) = codes(q);
            assert!(e.is_empty() && w.is_empty(), "{q}: {e:?} {w:?}");
        }
    }

    #[test]
    fn refused_commands_point_at_the_command() {
        for (q, cmd) in [
            ("index=main | delete", "delete"),
            (
                "index=main | stats count | outputlookup x.csv",
                "outputlookup",
            ),
            ("index=main | collect index=summary", "collect"),
            ("index=main | sendemail to=a@b.c", "sendemail"),
            ("index=main | script python x", "script"),
            ("index=main | map search=\"search x=$y$\"", "map"),
            ("index=main [| inputlookup x | delete]", "delete"),
        ] {
            let r = validate_query(Language::Spl, q);
            let d = r.errors.iter().find(|d| d.code == "refused_command");
            let d = d.unwrap_or_else(|| panic!("{q}: {r:?}"));
            assert!(d.message.contains(cmd), "{d:?}");
            let col = d.column.unwrap_or(0) as usize;
            assert_eq!(q.get(col - 1..col - 1 + cmd.len()), Some(cmd), "{q}");
        }
    }

    #[test]
    fn unknown_commands_and_empty_stages() {
        let r = validate_query(Language::Spl, "index=main\n| statz count");
        assert_eq!(r.errors[0].code, "unknown_command");
        assert_eq!((r.errors[0].line, r.errors[0].column), (Some(2), Some(3)));
        let (e, _) = codes("index=main | | stats count");
        assert_eq!(e, ["empty_stage"]);
    }

    #[test]
    fn costly_patterns_warn() {
        let (e, w) = codes("index=* user=*admin");
        assert!(e.is_empty());
        assert_eq!(w, ["all_indexes", "leading_wildcard"]);
        let (_, w) = codes("index=main earliest=0 *foo");
        assert_eq!(w, ["all_time_window", "leading_wildcard"]);
        let (_, w) = codes("index=main user=\"*admin\"");
        assert_eq!(w, ["leading_wildcard"]);
        let (_, w) = codes("index=main user=admin*");
        assert!(w.is_empty());
    }

    #[test]
    fn balance_errors_stop_further_checks() {
        let (e, _) = codes("index=main \"unterminated | delete");
        assert_eq!(e, ["unbalanced_quote"]);
        let (e, _) = codes("index=main | eval x=(1+2");
        assert_eq!(e, ["unbalanced_bracket"]);
    }
}
