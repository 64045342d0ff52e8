//! The audit log's Merkle proof verification against every case of
//! `../shared/vectors/merkle/` (transparency-dev/merkle `testdata/`, see
//! `../shared/SOURCES.md`): inclusion, consistency, subtree inclusion and
//! subtree consistency, including the cases that must fail.
//!
//! Files are read in place. A hash that is not 32 bytes cannot be expressed
//! in our API (`[u8; 32]`) and is refused at that boundary, exactly as a
//! proof arriving on the wire would be; in a failing case that counts as the
//! refusal. A few passing cases use such values as "don't care" placeholders
//! (the literal text "don't care 1"/"don't care 2") for roots the verifier must
//! not look at, or may only compare with each other: there the harness stands
//! in a 32-byte value derived from the placeholder (equal placeholders stay
//! equal) and the case must verify.

// Tests: a failed unwrap is a failed assertion, with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use picket_shared::merkle::{
    Hash, verify_consistency, verify_inclusion, verify_subtree_consistency,
    verify_subtree_inclusion,
};
use picket_shared::vault::sha256;
use serde_json::Value;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/merkle");

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
    {
        let path = entry.unwrap().path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// How a hash that is not 32 bytes is treated.
#[derive(Clone, Copy, PartialEq)]
enum Odd {
    /// Refused, as at the wire boundary.
    Refuse,
    /// Replaced by a stand-in derived from it (placeholders in passing cases).
    StandIn,
}

fn hash(v: &Value, odd: Odd) -> Option<Hash> {
    let raw = STANDARD.decode(v.as_str().unwrap_or("")).ok()?;
    match <Hash>::try_from(raw.as_slice()) {
        Ok(h) => Some(h),
        // Domain-separated, so that "" does not stand in as SHA-256(""), the
        // empty-tree hash, which several vectors use as a root.
        Err(_) if odd == Odd::StandIn => Some(sha256(&[b"stand-in:", &raw[..]].concat())),
        Err(_) => None,
    }
}

fn proof(v: &Value, odd: Odd) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(|h| hash(h, odd)).collect(),
        other => panic!("unexpected proof value {other}"),
    }
}

fn num(case: &Value, key: &str) -> u64 {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("missing or non-u64 field {key}"))
}

/// Runs one case; `None` if an input could not even be expressed (a hash of
/// the wrong length), otherwise whether verification succeeded.
fn run(kind: &str, c: &Value, odd: Odd) -> Option<bool> {
    let ok = match kind {
        "inclusion" => verify_inclusion(
            num(c, "leafIdx"),
            num(c, "treeSize"),
            &hash(&c["leafHash"], odd)?,
            &proof(&c["proof"], odd)?,
            &hash(&c["root"], odd)?,
        )
        .is_ok(),
        "consistency" => verify_consistency(
            num(c, "size1"),
            num(c, "size2"),
            &proof(&c["proof"], odd)?,
            &hash(&c["root1"], odd)?,
            &hash(&c["root2"], odd)?,
        )
        .is_ok(),
        "subtreeinclusion" => verify_subtree_inclusion(
            num(c, "leafIdx"),
            num(c, "start"),
            num(c, "end"),
            &hash(&c["leafHash"], odd)?,
            &proof(&c["proof"], odd)?,
            &hash(&c["root"], odd)?,
        )
        .is_ok(),
        "subtreeconsistency" => verify_subtree_consistency(
            num(c, "start"),
            num(c, "end"),
            num(c, "size"),
            &proof(&c["proof"], odd)?,
            &hash(&c["root1"], odd)?,
            &hash(&c["root2"], odd)?,
        )
        .is_ok(),
        other => panic!("unknown vector kind {other}"),
    };
    Some(ok)
}

#[derive(Default, Debug)]
struct Counts {
    total: usize,
    must_pass: usize,
    must_fail: usize,
    refused_at_boundary: usize,
    placeholders: usize,
    length_only: usize,
}

#[test]
fn every_merkle_vector() {
    let root = Path::new(VECTORS);
    assert!(
        root.is_dir(),
        "Merkle test vectors not found at {VECTORS}: the team's shared folder \
         (../shared next to the repository) is required for this test"
    );
    let mut files = Vec::new();
    json_files(root, &mut files);
    files.sort();

    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut failures = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap();
        let kind = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let case: Value = serde_json::from_slice(&fs::read(file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        let want_err = case["wantErr"]
            .as_bool()
            .unwrap_or_else(|| panic!("{}: no wantErr", rel.display()));
        let mut got = run(&kind, &case, Odd::Refuse);
        let c = counts.entry(kind.clone()).or_default();
        if got.is_none() && !want_err {
            c.placeholders += 1;
            got = run(&kind, &case, Odd::StandIn);
        }
        c.total += 1;
        if want_err {
            c.must_fail += 1;
        } else {
            c.must_pass += 1;
        }
        match (got, want_err) {
            (Some(ok), _) if ok != want_err => {}
            (None, true) => {
                // Refused at the boundary. Count how many the verification
                // logic would refuse as well with a stand-in hash; the rest
                // (e.g. an empty root and an equal empty leaf in a one-leaf
                // tree) are wrong only in their length.
                c.refused_at_boundary += 1;
                if run(&kind, &case, Odd::StandIn) != Some(false) {
                    c.length_only += 1;
                }
            }
            (got, _) => failures.push(format!(
                "{}: wantErr={want_err}, verified={got:?}",
                rel.display()
            )),
        }
    }
    for (kind, c) in &counts {
        println!(
            "merkle vectors {kind}: {} cases ({} must verify, {} must fail, of which {} \
             refused at the 32-byte hash boundary, {} of those wrong only in length; {} passing \
             cases with placeholder roots)",
            c.total, c.must_pass, c.must_fail, c.refused_at_boundary, c.length_only, c.placeholders
        );
    }
    assert!(
        failures.is_empty(),
        "{} cases wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for kind in [
        "inclusion",
        "consistency",
        "subtreeinclusion",
        "subtreeconsistency",
    ] {
        let c = counts.get(kind).map_or(0, |c| c.total);
        assert!(c > 0, "no {kind} vectors found under {VECTORS}");
    }
    assert_eq!(files.len(), counts.values().map(|c| c.total).sum::<usize>());
}
