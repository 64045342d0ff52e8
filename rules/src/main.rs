//! `picket-rules check FILE...`: validates rule files offline, with the same
//! checks the server runs on every save. Prints one line per finding
//! (`file:line:column: error|warning code: message`) and exits 1 when any
//! file has an error, 2 on usage errors, 0 otherwise. For CI in a rules
//! repository; pushing and pulling rules goes through the server's API
//! (`docs/lifecycle.md`).

use std::process::ExitCode;

use picket_rules::{Diagnostic, FileError, MAX_FILE_BYTES, RuleDraft, parse_file, validate};

fn print(file: &str, level: &str, d: &Diagnostic) {
    match (d.line, d.column) {
        (Some(l), Some(c)) => println!(
            "{file}:{l}:{c}: {level} {}: [{}] {}",
            d.code, d.field, d.message
        ),
        _ => println!("{file}: {level} {}: [{}] {}", d.code, d.field, d.message),
    }
}

/// Checks one file; true when it has no error.
fn check(path: &str) -> bool {
    let too_big = std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_FILE_BYTES as u64);
    if too_big {
        println!("{path}: error too_large: rule files are at most {MAX_FILE_BYTES} bytes");
        return false;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            println!("{path}: error unreadable: {e}");
            return false;
        }
    };
    let parsed = match parse_file(&text) {
        Ok(p) => p,
        Err(FileError::Invalid(ds)) => {
            for d in &ds {
                print(path, "error", d);
            }
            return false;
        }
        Err(e) => {
            println!("{path}: error invalid_rule_file: {e}");
            return false;
        }
    };
    let f = &parsed.file;
    let report = validate(&RuleDraft {
        siem_kind: parsed.siem,
        language: parsed.language,
        title: &f.name,
        query: &f.query,
        schedule: &parsed.schedule,
        mitre: &f.mitre,
    });
    let ok = report.errors.is_empty()
        && matches!(
            f.severity.as_str(),
            "info" | "low" | "medium" | "high" | "critical"
        );
    if !matches!(
        f.severity.as_str(),
        "info" | "low" | "medium" | "high" | "critical"
    ) {
        println!(
            "{path}: error invalid_field: [severity] severity must be info, low, medium, high or critical"
        );
    }
    for d in &report.errors {
        print(path, "error", d);
    }
    for d in &report.warnings {
        print(path, "warning", d);
    }
    ok
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, files)) = args.split_first() else {
        eprintln!("usage: picket-rules check FILE...");
        return ExitCode::from(2);
    };
    if cmd != "check" || files.is_empty() {
        eprintln!("usage: picket-rules check FILE...");
        return ExitCode::from(2);
    }
    let mut ok = true;
    for f in files {
        ok &= check(f);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
