//! The Sigma corpus in `../shared/corpus/sigma` (read in place) holds
//! detection rules, not SIEM queries, so the query checks do not apply to
//! it; what does apply is its ATT&CK tagging. Every `attack.tNNNN[.NNN]` tag
//! in the corpus must be accepted by `valid_technique` once written the way
//! Picket stores them (`T1059.001`), and tactic tags (`attack.ta0001`) and
//! other forms must be refused.

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/sigma/rules")
}

fn yml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            yml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yml") {
            out.push(p);
        }
    }
}

#[test]
fn every_sigma_technique_tag_is_a_valid_mitre_tag() {
    let root = corpus();
    assert!(
        root.is_dir(),
        "the Sigma corpus is not at {}",
        root.display()
    );
    let mut files = Vec::new();
    yml_files(&root, &mut files);
    assert!(files.len() > 1000, "only {} rule files found", files.len());
    let (mut techniques, mut others) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines() {
            let Some(tag) = line.trim().strip_prefix("- attack.") else {
                continue;
            };
            let tag = tag.trim();
            let upper = tag.to_ascii_uppercase();
            let is_technique = tag.starts_with('t')
                && tag
                    .get(1..2)
                    .is_some_and(|c| c.chars().all(|c| c.is_ascii_digit()));
            if is_technique {
                techniques += 1;
                assert!(
                    picket_rules::valid_technique(&upper),
                    "{}: {tag}",
                    f.display()
                );
            } else {
                others += 1;
                assert!(
                    !picket_rules::valid_technique(&upper),
                    "{}: {tag} accepted",
                    f.display()
                );
            }
        }
    }
    println!(
        "{} files: {techniques} technique tags valid, {others} tactic/other tags refused",
        files.len()
    );
    assert!(techniques > 1000, "{techniques}");
    assert!(others > 100, "{others}");
}
