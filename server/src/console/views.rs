//! Display helpers: status labels (always text and colour together), times,
//! sizes, server-drawn SVG charts and line diffs.

use std::fmt::Write as _;

/// A status as shown: a text label and the CSS class of its colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    /// What the status is, in words (never colour alone).
    pub label: &'static str,
    /// `ok`, `warn`, `bad`, `info` or `muted`.
    pub class: &'static str,
}

/// How a deployment status reads: `pending_approval` → "awaiting approval",
/// `delivered` → "sent", `succeeded` → "applied".
pub fn deployment_badge(status: &str) -> Badge {
    let (label, class) = match status {
        "pending_approval" => ("awaiting approval", "warn"),
        "queued" => ("queued", "info"),
        "delivered" => ("sent", "info"),
        "succeeded" => ("applied", "ok"),
        "failed" => ("failed", "bad"),
        "refused" => ("refused by agent", "bad"),
        "expired" => ("expired", "bad"),
        "rejected" => ("rejected", "bad"),
        "changes_requested" => ("changes requested", "warn"),
        "reverted" => ("reverted", "muted"),
        _ => ("unknown", "muted"),
    };
    Badge { label, class }
}

/// A deployed rule's drift state (`deployed`, `drift_detected`, `archived`).
pub fn drift_badge(state: &str) -> Badge {
    let (label, class) = match state {
        "deployed" => ("matches", "ok"),
        "drift_detected" => ("drifted", "bad"),
        "archived" => ("archived (not tracked)", "muted"),
        _ => ("unknown", "muted"),
    };
    Badge { label, class }
}

/// A fleet status badge.
pub fn agent_badge(status: &str) -> Badge {
    let (label, class) = match status {
        "online" => ("online", "ok"),
        "degraded" => ("degraded", "warn"),
        "offline" => ("offline", "bad"),
        "revoked" => ("revoked", "muted"),
        _ => ("unknown", "muted"),
    };
    Badge { label, class }
}

/// An audit outcome badge.
pub fn outcome_badge(outcome: &str) -> Badge {
    let (label, class) = match outcome {
        "success" => ("success", "ok"),
        "failure" => ("failure", "bad"),
        "denied" => ("denied", "warn"),
        _ => ("unknown", "muted"),
    };
    Badge { label, class }
}

/// `2026-11-23 10:04 UTC`.
pub fn when(secs: i64) -> String {
    let t = crate::time::rfc3339(secs);
    // rfc3339 gives 2026-11-23T10:04:05Z.
    match (t.get(..10), t.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm} UTC"),
        _ => t,
    }
}

/// `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(now: i64, secs: i64) -> String {
    let d = (now - secs).max(0);
    match d {
        0..60 => format!("{d} s ago"),
        60..3600 => format!("{} min ago", d / 60),
        3600..86_400 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86_400),
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: i64) -> String {
    #[allow(clippy::cast_precision_loss)] // display only
    let m = bytes as f64 / (1024.0 * 1024.0);
    format!("{m:.1} MiB")
}

/// A line chart drawn on the server: an `<svg>` with a polyline, axes and
/// min/max labels, sized by attributes (the CSP allows no inline style).
/// `points` are (Unix time, value), oldest first; every number is formatted
/// by this function, so nothing from the database reaches the markup as text.
pub fn line_chart(points: &[(i64, f64)], label: &str, unit: &str) -> String {
    const W: f64 = 640.0;
    const H: f64 = 160.0;
    const PAD_L: f64 = 56.0;
    const PAD_B: f64 = 22.0;
    const PAD_T: f64 = 10.0;
    let mut s = String::new();
    let title = escape(label);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"100%\" height=\"{H}\" role=\"img\" aria-label=\"{title}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{title}</title>"
    );
    let _ = write!(
        s,
        "<line x1=\"{PAD_L}\" y1=\"{y}\" x2=\"{W}\" y2=\"{y}\" stroke=\"#9aa4b2\" stroke-width=\"1\"/><line x1=\"{PAD_L}\" y1=\"{PAD_T}\" x2=\"{PAD_L}\" y2=\"{y}\" stroke=\"#9aa4b2\" stroke-width=\"1\"/>",
        y = H - PAD_B
    );
    if points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{x}\" y=\"{y}\" fill=\"#4a5565\" font-size=\"13\">No samples in this window yet</text></svg>",
            x = PAD_L + 12.0,
            y = H / 2.0
        );
        return s;
    }
    let t0 = points.first().map_or(0, |p| p.0);
    let t1 = points.last().map_or(0, |p| p.0).max(t0 + 1);
    let vmax = points
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let vmax = if vmax <= 0.0 { 1.0 } else { vmax * 1.1 };
    #[allow(clippy::cast_precision_loss)] // chart coordinates
    let span = (t1 - t0) as f64;
    let mut pts = String::new();
    for (t, v) in points {
        #[allow(clippy::cast_precision_loss)]
        let x = PAD_L + (W - PAD_L - 4.0) * ((t - t0) as f64 / span);
        let v = if v.is_finite() { *v } else { 0.0 };
        let y = H - PAD_B - (H - PAD_B - PAD_T) * (v / vmax);
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    let _ = write!(
        s,
        "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"{}\"/>",
        pts.trim_end()
    );
    if points.len() == 1 {
        let _ = write!(
            s,
            "<circle cx=\"{PAD_L}\" cy=\"{y:.1}\" r=\"3\" fill=\"#1f5fbf\"/>",
            y = H - PAD_B - (H - PAD_B - PAD_T) * (points[0].1 / vmax)
        );
    }
    let unit = escape(unit);
    let _ = write!(
        s,
        "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\" fill=\"#4a5565\" font-size=\"11\">{vmax:.1} {unit}</text><text x=\"{lx}\" y=\"{by}\" text-anchor=\"end\" fill=\"#4a5565\" font-size=\"11\">0</text>",
        lx = PAD_L - 6.0,
        ty = PAD_T + 10.0,
        by = H - PAD_B
    );
    let _ = write!(
        s,
        "<text x=\"{PAD_L}\" y=\"{y}\" fill=\"#4a5565\" font-size=\"11\">{a}</text><text x=\"{W}\" y=\"{y}\" text-anchor=\"end\" fill=\"#4a5565\" font-size=\"11\">{b}</text></svg>",
        y = H - 6.0,
        a = escape(&when(t0)),
        b = escape(&when(t1))
    );
    s
}

/// Minimal HTML escaping for text put into the SVG.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One line of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `same`, `add` or `del`.
    pub kind: &'static str,
    /// `+`, `-` or a space (screen readers and copy/paste see it too).
    pub sign: &'static str,
    /// The line.
    pub text: String,
}

/// Longest inputs diffed line by line (the LCS table is `old × new`).
pub const MAX_DIFF_LINES: usize = 2000;

/// A line diff of `old` → `new` (longest common subsequence). Inputs longer
/// than [`MAX_DIFF_LINES`] come back as a whole removal and a whole addition.
pub fn diff(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let line = |kind, sign, t: &str| DiffLine {
        kind,
        sign,
        text: t.to_owned(),
    };
    if a.len() > MAX_DIFF_LINES || b.len() > MAX_DIFF_LINES {
        return a
            .iter()
            .map(|t| line("del", "-", t))
            .chain(b.iter().map(|t| line("add", "+", t)))
            .collect();
    }
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n && j < m {
        if a[i] == b[j] {
            out.push(line("same", " ", a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(line("del", "-", a[i]));
            i += 1;
        } else {
            out.push(line("add", "+", b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|t| line("del", "-", t)));
    out.extend(b[j..].iter().map(|t| line("add", "+", t)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff("a\nb\nc", "a\nx\nc\nd");
        let signs: Vec<_> = d.iter().map(|l| format!("{}{}", l.sign, l.text)).collect();
        assert_eq!(signs, vec![" a", "-b", "+x", " c", "+d"]);
    }

    #[test]
    fn chart_has_no_style_and_escapes_labels() {
        let svg = line_chart(&[(0, 1.0), (60, 3.0)], "CPU <x>", "%");
        assert!(svg.starts_with("<svg"));
        assert!(!svg.contains("style"));
        assert!(svg.contains("CPU &lt;x&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(line_chart(&[], "x", "%").contains("No samples"));
    }

    #[test]
    fn statuses_read_as_words() {
        assert_eq!(deployment_badge("succeeded").label, "applied");
        assert_eq!(deployment_badge("pending_approval").class, "warn");
        assert_eq!(agent_badge("offline").label, "offline");
    }
}
