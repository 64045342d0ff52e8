//! The arguments `saved/searches` accepts, each tied to the `savedsearches.conf`
//! setting it writes.
//!
//! Splunk's REST handler takes form arguments and stores them as settings of the
//! saved search's stanza. Most arguments have the setting's own name; a few REST
//! names are aliases kept from older releases (`is_scheduled` writes
//! `enableSched`, `alert_type` writes `counttype`, `alert_comparator` writes
//! `relation`, `alert_threshold` writes `quantity`, and the comma-separated
//! `actions` list switches `action.<action_name>` settings on). The table below
//! records both names, so a test can check every setting against the published
//! spec (`shared/specs/splunk/savedsearches.conf.spec`) and the simulator
//! refuses anything the real handler would refuse with
//! `Argument "x" is not supported by this handler.`
//!
//! The list is deliberately a subset of the spec: the settings a detection
//! deployment plausibly sends, not the hundreds of `display.*` UI settings.

/// How the simulator checks, stores and reports one argument's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Any string, stored and reported as sent.
    Text,
    /// A boolean (`1`/`0`, `true`/`false`, `t`/`f`, `yes`/`no`), stored as `1`
    /// or `0` and reported as a JSON boolean, as Splunk does.
    Boolean,
    /// An integer within the inclusive bounds, stored and reported as a string.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// One of the listed strings (or the empty string, which clears the setting).
    OneOf(&'static [&'static str]),
}

/// One REST argument of `saved/searches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argument {
    /// The form argument's name on the REST API (and the key in the entry's `content`).
    pub rest: &'static str,
    /// The `savedsearches.conf` setting it writes, spelled exactly as in the spec
    /// (a family such as `action.<action_name>` keeps its placeholder).
    pub spec: &'static str,
    /// How its value is validated and reported.
    pub kind: ValueKind,
}

const fn same(name: &'static str, kind: ValueKind) -> Argument {
    Argument {
        rest: name,
        spec: name,
        kind,
    }
}

const fn alias(rest: &'static str, spec: &'static str, kind: ValueKind) -> Argument {
    Argument { rest, spec, kind }
}

const TEXT: ValueKind = ValueKind::Text;
const BOOL: ValueKind = ValueKind::Boolean;

/// Values of `alert_type` (`counttype` in the spec).
pub const ALERT_TYPES: &[&str] = &[
    "always",
    "custom",
    "number of events",
    "number of hosts",
    "number of sources",
];

/// Values of `alert_comparator` (`relation` in the spec).
pub const ALERT_COMPARATORS: &[&str] = &[
    "greater than",
    "less than",
    "equal to",
    "not equal to",
    "drops by",
    "rises by",
];

/// Every argument with a fixed name that the simulated handler accepts on
/// create and update (`name` is accepted on create only and is not listed).
pub const ARGUMENTS: &[Argument] = &[
    same("search", TEXT),
    same("description", TEXT),
    same("disabled", BOOL),
    // Scheduling.
    alias("is_scheduled", "enableSched", BOOL),
    same("cron_schedule", TEXT),
    same("allow_skew", TEXT),
    same(
        "max_concurrent",
        ValueKind::Integer {
            min: 0,
            max: i64::MAX,
        },
    ),
    same("realtime_schedule", BOOL),
    same(
        "schedule_priority",
        ValueKind::OneOf(&["default", "higher", "highest"]),
    ),
    same("schedule_window", TEXT),
    same("workload_pool", TEXT),
    same("dispatchAs", ValueKind::OneOf(&["user", "owner"])),
    same("federated_providers", TEXT),
    same("run_on_startup", BOOL),
    same(
        "run_n_times",
        ValueKind::Integer {
            min: 0,
            max: i64::MAX,
        },
    ),
    same("restart_on_searchpeer_add", BOOL),
    // Dispatch.
    same("dispatch.earliest_time", TEXT),
    same("dispatch.latest_time", TEXT),
    same("dispatch.index_earliest", TEXT),
    same("dispatch.index_latest", TEXT),
    same("dispatch.ttl", TEXT),
    same("dispatch.buckets", TEXT),
    same("dispatch.max_count", TEXT),
    same("dispatch.max_time", TEXT),
    same("dispatch.lookups", BOOL),
    same("dispatch.time_format", TEXT),
    same("dispatch.spawn_process", BOOL),
    same("dispatch.auto_cancel", TEXT),
    same("dispatch.auto_pause", TEXT),
    same("dispatch.reduce_freq", TEXT),
    same("dispatch.rt_backfill", BOOL),
    same("dispatch.sample_ratio", TEXT),
    // Alerting condition.
    alias("alert_type", "counttype", ValueKind::OneOf(ALERT_TYPES)),
    alias(
        "alert_comparator",
        "relation",
        ValueKind::OneOf(ALERT_COMPARATORS),
    ),
    alias("alert_threshold", "quantity", TEXT),
    same("alert_condition", TEXT),
    // Alert suppression, severity, tracking.
    same("alert.severity", ValueKind::Integer { min: 1, max: 6 }),
    same("alert.track", TEXT),
    same("alert.suppress", BOOL),
    same("alert.suppress.period", TEXT),
    same("alert.suppress.fields", TEXT),
    same("alert.suppress.group_name", TEXT),
    same("alert.expires", TEXT),
    same("alert.digest_mode", BOOL),
    same("alert.display_view", TEXT),
    same("alert.managedBy", TEXT),
    // Actions: the REST list switches `action.<action_name>` settings on.
    alias("actions", "action.<action_name>", TEXT),
    // UI.
    same("is_visible", BOOL),
    same("displayview", TEXT),
    same("request.ui_dispatch_app", TEXT),
    same("request.ui_dispatch_view", TEXT),
    same("auto_summarize", BOOL),
];

/// Prefix of the `action.*` family: `action.<action_name>` (a boolean) and
/// `action.<action_name>.<parameter>` (any value).
pub const ACTION_PREFIX: &str = "action.";

/// The spec settings the `action.*` family stands for.
pub const ACTION_SPEC_KEYS: &[&str] = &["action.<action_name>", "action.<action_name>.<parameter>"];

/// How an argument named `name` is validated, or `None` when the handler does
/// not support it.
pub fn kind_of(name: &str) -> Option<ValueKind> {
    if let Some(arg) = ARGUMENTS.iter().find(|a| a.rest == name) {
        return Some(arg.kind);
    }
    let rest = name.strip_prefix(ACTION_PREFIX)?;
    let mut parts = rest.split('.');
    let action = parts.next().unwrap_or_default();
    if action.is_empty()
        || !action
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return None;
    }
    match parts.next() {
        None => Some(ValueKind::Boolean),
        Some(param) if !param.is_empty() => Some(ValueKind::Text),
        Some(_) => None,
    }
}

/// Checks and normalises one value. Booleans become `1` or `0`.
///
/// # Errors
/// A Splunk-style message naming the argument when the value does not fit its kind.
pub fn normalise(name: &str, kind: ValueKind, value: &str) -> Result<String, String> {
    let invalid = || format!("Invalid value \"{value}\" for argument \"{name}\".");
    match kind {
        ValueKind::Text => Ok(value.to_owned()),
        ValueKind::Boolean => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" | "y" => Ok("1".to_owned()),
            "0" | "false" | "f" | "no" | "n" | "" => Ok("0".to_owned()),
            _ => Err(invalid()),
        },
        ValueKind::Integer { min, max } => match value.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid()),
        },
        ValueKind::OneOf(allowed) => {
            if value.is_empty() || allowed.contains(&value) {
                Ok(value.to_owned())
            } else {
                Err(invalid())
            }
        }
    }
}

/// Defaults the REST view shows for settings a stanza does not set (from the spec).
pub const DEFAULTS: &[(&str, &str)] = &[
    ("actions", ""),
    ("alert.digest_mode", "1"),
    ("alert.expires", "24h"),
    ("alert.severity", "3"),
    ("alert.suppress", "0"),
    ("alert.track", "auto"),
    ("alert_comparator", ""),
    ("alert_condition", ""),
    ("alert_threshold", ""),
    ("alert_type", "always"),
    ("cron_schedule", ""),
    ("description", ""),
    ("disabled", "0"),
    ("dispatch.earliest_time", ""),
    ("dispatch.latest_time", ""),
    ("dispatchAs", "owner"),
    ("is_scheduled", "0"),
    ("is_visible", "1"),
    ("max_concurrent", "1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_unknowns() {
        assert_eq!(kind_of("action.email"), Some(ValueKind::Boolean));
        assert_eq!(kind_of("action.email.to"), Some(ValueKind::Text));
        assert_eq!(kind_of("action."), None);
        assert_eq!(kind_of("action.email."), None);
        assert_eq!(kind_of("name"), None);
        assert_eq!(kind_of("bogus"), None);
        assert_eq!(kind_of("is_scheduled"), Some(ValueKind::Boolean));
    }

    #[test]
    fn normalises_values() {
        assert_eq!(normalise("disabled", BOOL, "true").as_deref(), Ok("1"));
        assert_eq!(normalise("disabled", BOOL, "0").as_deref(), Ok("0"));
        assert!(normalise("disabled", BOOL, "maybe").is_err());
        let sev = ValueKind::Integer { min: 1, max: 6 };
        assert_eq!(normalise("alert.severity", sev, "4").as_deref(), Ok("4"));
        assert!(normalise("alert.severity", sev, "7").is_err());
        let t = ValueKind::OneOf(ALERT_TYPES);
        assert!(normalise("alert_type", t, "number of events").is_ok());
        assert!(normalise("alert_type", t, "lots").is_err());
    }

    #[test]
    fn every_default_is_a_supported_argument() {
        for (name, value) in DEFAULTS {
            let kind = kind_of(name).unwrap_or_else(|| panic!("{name} is not supported"));
            assert!(normalise(name, kind, value).is_ok(), "{name}={value}");
        }
    }
}
