//! Findings of validation.

use serde::Serialize;

/// One finding: which field, where in it (for queries), a stable code and a
/// message for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The field at fault: `query`, `cron`, `earliest`, `mitre`...
    pub field: &'static str,
    /// 1-based line in the field's text, when the finding has a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column (in characters), when the finding has a position.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// Stable machine-readable code, e.g. `unbalanced_quote`, `refused_command`.
    pub code: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    /// A finding about a whole field.
    pub fn field(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Diagnostic {
            field,
            line: None,
            column: None,
            code,
            message: message.into(),
        }
    }

    /// A finding at byte offset `pos` of the query `text`.
    pub fn at(text: &str, pos: usize, code: &'static str, message: impl Into<String>) -> Self {
        let (line, column) = line_col(text, pos);
        Diagnostic {
            field: "query",
            line: Some(line),
            column: Some(column),
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(
                f,
                "{} {l}:{c}: {} ({})",
                self.field, self.message, self.code
            ),
            _ => write!(f, "{}: {} ({})", self.field, self.message, self.code),
        }
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> (u32, u32) {
    let pos = pos.min(text.len());
    let before = text.get(..pos).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// Errors (block a save) and warnings (returned with the saved version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Findings that make the rule unusable or unsafe.
    pub errors: Vec<Diagnostic>,
    /// Findings about cost or style; the rule can still be saved.
    pub warnings: Vec<Diagnostic>,
}

/// More findings than this in one report are dropped: a hostile query
/// could otherwise produce one per byte.
const MAX_FINDINGS: usize = 50;

impl Report {
    /// Adds an error.
    pub fn error(&mut self, d: Diagnostic) {
        if self.errors.len() < MAX_FINDINGS {
            self.errors.push(d);
        }
    }

    /// Adds a warning.
    pub fn warn(&mut self, d: Diagnostic) {
        if self.warnings.len() < MAX_FINDINGS {
            self.warnings.push(d);
        }
    }

    /// Adds another report's findings.
    pub fn extend(&mut self, other: Report) {
        for e in other.errors {
            self.error(e);
        }
        for w in other.warnings {
            self.warn(w);
        }
    }

    /// True when nothing blocks a save.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_in_characters() {
        let t = "ab\ncdé|x";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        let bar = t.find('|').unwrap_or(0);
        assert_eq!(line_col(t, bar), (2, 4));
    }
}
