//! Every saved-search setting the simulator accepts exists in Splunk's published
//! `savedsearches.conf.spec` (read in place from `shared/specs/splunk/`).

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use picket_siem_sim::splunk::arguments::{ACTION_SPEC_KEYS, ARGUMENTS};

const SPEC_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/specs/splunk/savedsearches.conf.spec"
);

/// The setting names the spec defines: the text before `=` on each line that
/// starts a setting (not a comment, a bullet or a stanza header).
fn spec_settings() -> Vec<String> {
    let spec = std::fs::read_to_string(SPEC_PATH).unwrap_or_else(|e| {
        panic!("cannot read the Splunk spec at {SPEC_PATH}: {e}; shared/ must sit beside the repository")
    });
    let settings: Vec<String> = spec
        .lines()
        .filter(|l| !l.starts_with(['#', '*', '[', ' ', '\t']))
        .filter_map(|l| l.split_once('='))
        .map(|(key, _)| key.trim().to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    assert!(
        settings.len() > 100,
        "{SPEC_PATH} looks truncated: only {} settings",
        settings.len()
    );
    settings
}

#[test]
fn every_embedded_argument_is_a_spec_setting() {
    let settings = spec_settings();
    let mut missing = Vec::new();
    let spec_keys = ARGUMENTS
        .iter()
        .map(|a| a.spec)
        .chain(ACTION_SPEC_KEYS.iter().copied());
    for key in spec_keys {
        if !settings.iter().any(|s| s == key) {
            missing.push(key);
        }
    }
    assert!(
        missing.is_empty(),
        "not in savedsearches.conf.spec: {missing:?}"
    );
}

#[test]
fn arguments_that_keep_their_spec_name_are_spelled_alike() {
    // Only the documented REST aliases may differ from the spec name.
    let aliases = [
        ("is_scheduled", "enableSched"),
        ("alert_type", "counttype"),
        ("alert_comparator", "relation"),
        ("alert_threshold", "quantity"),
        ("actions", "action.<action_name>"),
    ];
    for arg in ARGUMENTS {
        if arg.rest != arg.spec {
            assert!(
                aliases.contains(&(arg.rest, arg.spec)),
                "unexpected alias {} -> {}",
                arg.rest,
                arg.spec
            );
        }
    }
    let rest: Vec<&str> = ARGUMENTS.iter().map(|a| a.rest).collect();
    for needed in [
        "search",
        "description",
        "cron_schedule",
        "is_scheduled",
        "disabled",
        "dispatch.earliest_time",
        "dispatch.latest_time",
        "alert_type",
        "alert_comparator",
        "alert_threshold",
        "alert.severity",
        "alert.track",
        "alert.suppress",
        "actions",
    ] {
        assert!(rest.contains(&needed), "{needed} is not accepted");
    }
}
