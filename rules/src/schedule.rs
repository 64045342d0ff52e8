//! Schedules. The canonical form, stored and sent to agents, is a five-field
//! cron plus a Splunk-style window (`earliest` / `latest`). Sentinel rules may
//! be written with ISO 8601 durations (`queryFrequency = PT5M`, `queryPeriod
//! = PT1H`) and Elastic rules with `interval = 5m`, `from = now-6m`; those
//! native forms are converted to the canonical one by
//! [`schedule_from_native`], which the agents turn back into each SIEM's form.

use serde::{Deserialize, Serialize};

use crate::SiemKind;
use crate::diag::{Diagnostic, Report};

/// When a rule runs and over which window (canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Five-field cron, e.g. `*/5 * * * *`.
    pub cron: String,
    /// Window start relative to run time, e.g. `-5m`, `-1h@h`.
    pub earliest: String,
    /// Window end, e.g. `now`.
    pub latest: String,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// Sentinel's bounds on `queryFrequency` and `queryPeriod` (5 minutes to 14 days).
const SENTINEL_MIN: u64 = 5 * MINUTE;
const SENTINEL_MAX: u64 = 14 * DAY;
/// Longer lookbacks than this are warned about as (nearly) all-time windows.
const LONG_WINDOW: u64 = 30 * DAY;

/// Checks a canonical schedule for a rule of `kind`.
pub(crate) fn validate(kind: SiemKind, s: &Schedule) -> Report {
    let mut r = Report::default();
    if let Err(m) = cron(&s.cron) {
        r.error(Diagnostic::field("cron", "invalid_schedule", m));
        return r;
    }
    let lookback = match splunk_time("earliest", &s.earliest) {
        Ok(v) => v,
        Err(m) => {
            r.error(Diagnostic::field("earliest", "invalid_schedule", m));
            return r;
        }
    };
    if let Err(m) = splunk_time("latest", &s.latest) {
        r.error(Diagnostic::field("latest", "invalid_schedule", m));
        return r;
    }
    match lookback {
        Lookback::AllTime => r.warn(Diagnostic::field(
            "earliest",
            "all_time_window",
            "earliest=0 searches all time on every run; bound the window",
        )),
        Lookback::Secs(n) if n > LONG_WINDOW => r.warn(Diagnostic::field(
            "earliest",
            "long_window",
            format!(
                "a {}-day window is searched on every run; is that needed?",
                n / DAY
            ),
        )),
        _ => {}
    }
    let period = cron_period(&s.cron);
    if let (Some(p), Lookback::Secs(l)) = (period, lookback)
        && l < p
    {
        r.warn(Diagnostic::field(
            "earliest",
            "window_gap",
            format!(
                "the window ({}) is shorter than the interval between runs ({}): events in between are never searched",
                human(l),
                human(p)
            ),
        ));
    }
    if kind == SiemKind::Splunk {
        return r;
    }
    // Sentinel and Elastic take a period and a lookback, not a cron.
    let name = kind.as_str();
    let Some(p) = period else {
        r.error(Diagnostic::field(
            "cron",
            "invalid_schedule",
            format!(
                "{name} runs rules every N minutes, hours or days: use */N * * * *, M */N * * *, M H * * * or M H */N * *"
            ),
        ));
        return r;
    };
    let Lookback::Secs(l) = lookback else {
        r.error(Diagnostic::field(
            "earliest",
            "invalid_schedule",
            format!("{name} needs a relative lookback such as -5m, -1h or -1d"),
        ));
        return r;
    };
    if s.latest != "now" {
        r.error(Diagnostic::field(
            "latest",
            "invalid_schedule",
            format!("{name} windows end at run time: latest must be now"),
        ));
    }
    if kind == SiemKind::Sentinel {
        for (field, v, what) in [
            ("cron", p, "queryFrequency"),
            ("earliest", l, "queryPeriod"),
        ] {
            if !(SENTINEL_MIN..=SENTINEL_MAX).contains(&v) {
                r.error(Diagnostic::field(
                    field,
                    "invalid_schedule",
                    format!(
                        "Sentinel's {what} must be from PT5M to P14D; this is {}",
                        iso(v)
                    ),
                ));
            }
        }
    }
    r
}

fn human(secs: u64) -> String {
    if secs.is_multiple_of(DAY) {
        format!("{} d", secs / DAY)
    } else if secs.is_multiple_of(HOUR) {
        format!("{} h", secs / HOUR)
    } else {
        format!("{} min", secs / MINUTE)
    }
}

fn iso(secs: u64) -> String {
    if secs.is_multiple_of(DAY) {
        format!("P{}D", secs / DAY)
    } else if secs.is_multiple_of(HOUR) {
        format!("PT{}H", secs / HOUR)
    } else {
        format!("PT{}M", secs / MINUTE)
    }
}

/// A five-field cron (minute hour day-of-month month day-of-week) using
/// numbers, `*`, `/`, `,` and `-`, each number in its field's range.
fn cron(value: &str) -> Result<(), String> {
    let fields: Vec<&str> = value.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "cron must have 5 fields (minute hour day month weekday), found {}",
            fields.len()
        ));
    }
    let names = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    let ranges = [(0u32, 59u32), (0, 23), (1, 31), (1, 12), (0, 7)];
    for ((f, name), (lo, hi)) in fields.iter().zip(names).zip(ranges) {
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(s) = step
                && !s.parse::<u32>().is_ok_and(|n| n >= 1 && n <= hi.max(1))
            {
                return Err(format!(
                    "cron {name} field: bad step {:?}",
                    crate::truncate(s, 10)
                ));
            }
            if range == "*" {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            for n in [a, b] {
                if !n.parse::<u32>().is_ok_and(|v| v >= lo && v <= hi) {
                    return Err(format!(
                        "cron {name} field: {:?} is not a number from {lo} to {hi}",
                        crate::truncate(n, 10)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The period of a cron that runs every N minutes, hours or days, in seconds
/// (the forms the Sentinel and Elastic connectors accept).
fn cron_period(cron: &str) -> Option<u64> {
    let f: Vec<&str> = cron.split_whitespace().collect();
    let [min, hour, dom, month, dow] = f.as_slice() else {
        return None;
    };
    let every = |s: &str| {
        s.strip_prefix("*/")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > 0)
    };
    let fixed = |s: &str| s.parse::<u32>().is_ok();
    if *month != "*" || *dow != "*" {
        return None;
    }
    if let Some(n) = every(min) {
        return (*hour == "*" && *dom == "*").then_some(n * MINUTE);
    }
    if !fixed(min) {
        return None;
    }
    match (*hour, every(hour), *dom, every(dom)) {
        ("*", _, "*", _) => Some(HOUR),
        (_, Some(n), "*", _) => Some(n * HOUR),
        (h, None, "*", _) if fixed(h) => Some(DAY),
        (h, None, _, Some(n)) if fixed(h) => Some(n * DAY),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookback {
    /// `0`: all time.
    AllTime,
    /// A relative time N seconds before run time.
    Secs(u64),
    /// `now`, an epoch, or a snap-only form: valid for Splunk, no lookback length.
    Other,
}

/// A Splunk time modifier: `now`, `0`, an epoch, `-15m`, `-1h@h`, `@d`.
fn splunk_time(field: &str, v: &str) -> Result<Lookback, String> {
    let bad = || {
        format!(
            "{field} must be a time modifier such as -15m, -1h@h, now or 0, not {:?}",
            crate::truncate(v, 32)
        )
    };
    if v.is_empty() || v.len() > 32 {
        return Err(bad());
    }
    if v == "now" {
        return Ok(Lookback::Other);
    }
    if v == "0" {
        return Ok(Lookback::AllTime);
    }
    if v.chars().all(|c| c.is_ascii_digit()) {
        return Ok(Lookback::Other);
    }
    let (rel, snap) = v.split_once('@').unwrap_or((v, ""));
    if !snap.is_empty()
        && !snap
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '+')
    {
        return Err(bad());
    }
    if rel.is_empty() {
        return Ok(Lookback::Other);
    }
    let Some(rest) = rel.strip_prefix('-').or_else(|| rel.strip_prefix('+')) else {
        return Err(bad());
    };
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (digits, unit) = rest.split_at(split);
    let n: u64 = if digits.is_empty() {
        1
    } else {
        digits.parse().map_err(|_| bad())?
    };
    let unit_secs = match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "week" | "weeks" => 7 * DAY,
        "mon" | "month" | "months" => 30 * DAY,
        "y" | "yr" | "yrs" | "year" | "years" => 365 * DAY,
        _ => return Err(bad()),
    };
    if rel.starts_with('+') {
        return Ok(Lookback::Other);
    }
    Ok(Lookback::Secs(n.saturating_mul(unit_secs)))
}

/// An ISO 8601 duration as Sentinel uses them (`PT5M`, `PT1H`, `P1D`,
/// `P1DT12H`, `P2W`), in seconds. Years and months are refused: their length
/// varies.
///
/// # Errors
/// A message naming what is wrong.
pub fn iso8601_duration(s: &str) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "{:?} is not an ISO 8601 duration like PT5M, PT1H or P1D: {why}",
            crate::truncate(s, 32)
        )
    };
    let body = s
        .strip_prefix('P')
        .ok_or_else(|| bad("it must start with P"))?;
    if body.is_empty() || body == "T" {
        return Err(bad("it has no value"));
    }
    let (date, time) = match body.split_once('T') {
        Some((_, "")) => return Err(bad("nothing follows T")),
        Some((d, t)) => (d, t),
        None => (body, ""),
    };
    let mut total: u64 = 0;
    let date_units: &[(char, u64)] = &[('W', 7 * DAY), ('D', DAY)];
    let time_units: &[(char, u64)] = &[('H', HOUR), ('M', MINUTE), ('S', 1)];
    for (is_date, part, units) in [(true, date, date_units), (false, time, time_units)] {
        let mut rest = part;
        let mut last = 0usize;
        while !rest.is_empty() {
            let split = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(|| bad("a number has no unit"))?;
            if split == 0 {
                return Err(bad("a unit has no number"));
            }
            let (n, tail) = rest.split_at(split);
            let unit = tail.chars().next().unwrap_or(' ');
            if unit == 'Y' || (is_date && unit == 'M') {
                return Err(bad("years and months have no fixed length"));
            }
            let (idx, (_, secs)) = units
                .iter()
                .enumerate()
                .find(|(_, (u, _))| *u == unit)
                .ok_or_else(|| bad("unknown or misplaced unit"))?;
            if idx < last {
                return Err(bad("units are out of order"));
            }
            last = idx + 1;
            let n: u64 = n.parse().map_err(|_| bad("the number is too large"))?;
            total = total.saturating_add(n.saturating_mul(*secs));
            rest = tail.get(unit.len_utf8()..).unwrap_or_default();
        }
    }
    if total == 0 {
        return Err(bad("it is zero"));
    }
    Ok(total)
}

fn unit_duration(s: &str, what: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{what} {:?} must be a number and a unit (s, m, h, d), like 5m",
            crate::truncate(s, 32)
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mul = match unit {
        "s" => 1,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("{what} must not be zero"));
    }
    Ok(n.saturating_mul(mul))
}

/// Elastic's rule `interval` (`5m`, `1h`, `30s`, `1d`), in seconds.
///
/// # Errors
/// A message naming what is wrong.
pub fn elastic_interval(s: &str) -> Result<u64, String> {
    unit_duration(s, "interval")
}

/// Elastic's rule `from` (`now-6m`, date math relative to now), as a lookback in seconds.
///
/// # Errors
/// A message naming what is wrong.
pub fn elastic_from(s: &str) -> Result<u64, String> {
    let rest = s.strip_prefix("now-").ok_or_else(|| {
        format!(
            "from {:?} must be date math like now-6m",
            crate::truncate(s, 32)
        )
    })?;
    unit_duration(rest, "from")
}

/// Converts a native schedule (Sentinel: ISO 8601 `frequency` and `lookback`;
/// Elastic: `interval` and `from`) to the canonical form.
///
/// # Errors
/// Diagnostics naming `frequency` or `lookback`; Splunk has no native form
/// other than cron.
pub fn schedule_from_native(
    kind: SiemKind,
    frequency: &str,
    lookback: &str,
) -> Result<Schedule, Vec<Diagnostic>> {
    let (f, l) = match kind {
        SiemKind::Sentinel => (iso8601_duration(frequency), iso8601_duration(lookback)),
        SiemKind::Elastic => (elastic_interval(frequency), elastic_from(lookback)),
        SiemKind::Splunk => {
            return Err(vec![Diagnostic::field(
                "frequency",
                "invalid_schedule",
                "Splunk rules are scheduled with cron, earliest and latest",
            )]);
        }
    };
    let mut errs = Vec::new();
    if let Err(m) = &f {
        errs.push(Diagnostic::field(
            "frequency",
            "invalid_schedule",
            m.clone(),
        ));
    }
    if let Err(m) = &l {
        errs.push(Diagnostic::field("lookback", "invalid_schedule", m.clone()));
    }
    let (Ok(f), Ok(l)) = (f, l) else {
        return Err(errs);
    };
    let cron = if f.is_multiple_of(DAY) {
        match f / DAY {
            1 => "0 0 * * *".to_owned(),
            n if n <= 31 => format!("0 0 */{n} * *"),
            _ => String::new(),
        }
    } else if f.is_multiple_of(HOUR) {
        match f / HOUR {
            1 => "0 * * * *".to_owned(),
            n => format!("0 */{n} * * *"),
        }
    } else if f.is_multiple_of(MINUTE) && f < HOUR {
        format!("*/{} * * * *", f / MINUTE)
    } else {
        String::new()
    };
    if cron.is_empty() {
        return Err(vec![Diagnostic::field(
            "frequency",
            "invalid_schedule",
            format!(
                "a frequency of {f} s cannot be scheduled: use whole minutes under an hour, whole hours, or whole days up to 31"
            ),
        )]);
    }
    let earliest = if l.is_multiple_of(DAY) {
        format!("-{}d", l / DAY)
    } else if l.is_multiple_of(HOUR) {
        format!("-{}h", l / HOUR)
    } else {
        format!("-{}m", l.div_ceil(MINUTE))
    };
    Ok(Schedule {
        cron,
        earliest,
        latest: "now".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(c: &str, e: &str, l: &str) -> Schedule {
        Schedule {
            cron: c.into(),
            earliest: e.into(),
            latest: l.into(),
        }
    }

    #[test]
    fn iso_durations() {
        assert_eq!(iso8601_duration("PT5M"), Ok(300));
        assert_eq!(iso8601_duration("PT1H"), Ok(3600));
        assert_eq!(iso8601_duration("P1D"), Ok(86_400));
        assert_eq!(iso8601_duration("P1DT12H"), Ok(129_600));
        assert_eq!(iso8601_duration("P2W"), Ok(14 * 86_400));
        for (bad, why) in [
            ("5M", "start with P"),
            ("P", "no value"),
            ("PT", "no value"),
            ("P1M", "years and months"),
            ("P1Y", "years and months"),
            ("PT5", "no unit"),
            ("PTM", "no number"),
            ("PT5M1H", "out of order"),
            ("P5H", "misplaced"),
            ("PT0M", "zero"),
        ] {
            let e = iso8601_duration(bad).err().unwrap_or_default();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn elastic_forms() {
        assert_eq!(elastic_interval("5m"), Ok(300));
        assert_eq!(elastic_from("now-6m"), Ok(360));
        assert!(elastic_interval("5").is_err());
        assert!(elastic_interval("0m").is_err());
        assert!(elastic_from("6m").unwrap_err().contains("now-6m"));
        assert!(elastic_from("now-6x").is_err());
    }

    #[test]
    fn native_forms_become_canonical() {
        let s = schedule_from_native(SiemKind::Sentinel, "PT5M", "PT1H").unwrap();
        assert_eq!(s, sched("*/5 * * * *", "-1h", "now"));
        let s = schedule_from_native(SiemKind::Sentinel, "P1D", "P14D").unwrap();
        assert_eq!(s, sched("0 0 * * *", "-14d", "now"));
        let s = schedule_from_native(SiemKind::Elastic, "2h", "now-150m").unwrap();
        assert_eq!(s, sched("0 */2 * * *", "-150m", "now"));
        let e = schedule_from_native(SiemKind::Sentinel, "PT90M", "PT1H").unwrap_err();
        assert_eq!(e[0].field, "frequency");
        let e = schedule_from_native(SiemKind::Elastic, "x", "y").unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(schedule_from_native(SiemKind::Splunk, "5m", "now-5m").is_err());
    }

    #[test]
    fn canonical_checks_per_kind() {
        assert!(
            validate(SiemKind::Splunk, &sched("*/5 * * * *", "-5m", "now"))
                .errors
                .is_empty()
        );
        assert!(
            validate(SiemKind::Splunk, &sched("15 3 * * 1-5", "-1d@d", "@d"))
                .errors
                .is_empty()
        );
        let r = validate(SiemKind::Splunk, &sched("*/5 * * *", "-5m", "now"));
        assert_eq!(r.errors[0].field, "cron");
        let r = validate(SiemKind::Splunk, &sched("*/5 * * * *", "yesterday", "now"));
        assert_eq!(r.errors[0].field, "earliest");
        let r = validate(SiemKind::Splunk, &sched("*/5 * * * *", "0", "now"));
        assert_eq!(r.warnings[0].code, "all_time_window");
        let r = validate(SiemKind::Splunk, &sched("0 * * * *", "-5m", "now"));
        assert_eq!(r.warnings[0].code, "window_gap");
        // Sentinel: a period cron, a relative lookback, bounds.
        let r = validate(SiemKind::Sentinel, &sched("15 3 * * 1-5", "-1d", "now"));
        assert!(r.errors[0].message.contains("every N minutes"), "{r:?}");
        let r = validate(SiemKind::Sentinel, &sched("*/1 * * * *", "-1m", "now"));
        assert!(r.errors[0].message.contains("PT5M to P14D"), "{r:?}");
        let r = validate(SiemKind::Sentinel, &sched("*/5 * * * *", "-30d", "now"));
        assert!(
            r.errors.iter().any(|e| e.message.contains("queryPeriod")),
            "{r:?}"
        );
        let r = validate(SiemKind::Elastic, &sched("*/5 * * * *", "-5m", "-1m"));
        assert_eq!(r.errors[0].field, "latest");
        assert!(
            validate(SiemKind::Elastic, &sched("*/1 * * * *", "-2m", "now"))
                .errors
                .is_empty()
        );
    }
}
