//! One pass over a query: strings and comments are masked (replaced by
//! spaces of the same byte length, so offsets still point into the original
//! text), quotes and brackets are checked, top-level pipes are found.

use crate::diag::{Diagnostic, Report};

/// Lexical conventions of a language that matter for balance checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syntax {
    /// `'...'` is a string (or quoted name).
    pub single_quote: bool,
    /// `"""..."""` is a string.
    pub triple_quote: bool,
    /// `` `...` `` is a quoted name or macro (SPL macro, ES|QL identifier).
    pub backtick: bool,
    /// ```` ```...``` ```` is a comment (SPL) rather than a string.
    pub triple_backtick_comment: bool,
    /// `// ...` to the end of the line is a comment.
    pub line_comment: bool,
    /// `/* ... */` is a comment.
    pub block_comment: bool,
}

/// A string literal found in the query.
#[derive(Debug, Clone)]
pub(crate) struct Literal {
    /// Byte offset of the opening quote.
    pub start: usize,
    /// The text between the quotes (escapes left as written).
    pub body: String,
}

/// What one scan found.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    /// The query with string bodies and comments replaced by spaces
    /// (newlines kept), byte for byte.
    pub masked: String,
    /// Byte offsets of `|` outside strings, comments and brackets.
    pub pipes: Vec<usize>,
    /// String literals, in order.
    pub literals: Vec<Literal>,
}

impl Scanned {
    /// The top-level pipeline stages as (byte offset, masked text).
    pub fn stages(&self) -> Vec<(usize, &str)> {
        let mut out = Vec::with_capacity(self.pipes.len() + 1);
        let mut start = 0;
        for &p in &self.pipes {
            out.push((start, self.masked.get(start..p).unwrap_or_default()));
            start = p + 1;
        }
        out.push((start, self.masked.get(start..).unwrap_or_default()));
        out
    }
}

fn blank(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(bytes.iter().map(|b| if *b == b'\n' { b'\n' } else { b' ' }));
}

fn close_of(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

/// Scans `q`, recording unbalanced quotes and brackets as errors in `r`.
pub(crate) fn scan(q: &str, syn: Syntax, r: &mut Report) -> Scanned {
    let b = q.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut s = Scanned::default();
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let rest = &b[i..];
        // Comments.
        if syn.triple_backtick_comment && rest.starts_with(b"```") {
            match find(b, i + 3, b"```") {
                Some(end) => {
                    blank(&mut out, &b[i..end + 3]);
                    i = end + 3;
                }
                None => {
                    r.error(Diagnostic::at(
                        q,
                        i,
                        "unterminated_comment",
                        "comment opened with ``` is never closed",
                    ));
                    blank(&mut out, &b[i..]);
                    i = b.len();
                }
            }
            continue;
        }
        if syn.line_comment && rest.starts_with(b"//") {
            let end = find(b, i, b"\n").unwrap_or(b.len());
            blank(&mut out, &b[i..end]);
            i = end;
            continue;
        }
        if syn.block_comment && rest.starts_with(b"/*") {
            match find(b, i + 2, b"*/") {
                Some(end) => {
                    blank(&mut out, &b[i..end + 2]);
                    i = end + 2;
                }
                None => {
                    r.error(Diagnostic::at(
                        q,
                        i,
                        "unterminated_comment",
                        "comment opened with /* is never closed",
                    ));
                    blank(&mut out, &b[i..]);
                    i = b.len();
                }
            }
            continue;
        }
        // Strings.
        let quote = if syn.triple_quote && rest.starts_with(b"\"\"\"") {
            Some((b"\"\"\"".as_slice(), false))
        } else if c == b'"' {
            // KQL verbatim strings (@"...") have no escapes.
            let verbatim = i > 0 && b[i - 1] == b'@';
            Some((b"\"".as_slice(), !verbatim))
        } else if c == b'\'' && syn.single_quote {
            let verbatim = i > 0 && b[i - 1] == b'@';
            Some((b"'".as_slice(), !verbatim))
        } else if c == b'`' && (syn.backtick || rest.starts_with(b"```")) {
            if rest.starts_with(b"```") {
                Some((b"```".as_slice(), false))
            } else {
                Some((b"`".as_slice(), false))
            }
        } else {
            None
        };
        if let Some((delim, escapes)) = quote {
            let body_start = i + delim.len();
            let mut j = body_start;
            let mut end = None;
            while j < b.len() {
                if escapes && b[j] == b'\\' {
                    j += 2;
                    continue;
                }
                if b[j..].starts_with(delim) {
                    end = Some(j);
                    break;
                }
                j += 1;
            }
            match end {
                Some(e) => {
                    out.extend_from_slice(delim);
                    blank(&mut out, &b[body_start..e]);
                    out.extend_from_slice(delim);
                    s.literals.push(Literal {
                        start: i,
                        body: String::from_utf8_lossy(&b[body_start..e]).into_owned(),
                    });
                    i = e + delim.len();
                }
                None => {
                    let shown = String::from_utf8_lossy(delim).into_owned();
                    r.error(Diagnostic::at(
                        q,
                        i,
                        "unbalanced_quote",
                        format!("string opened with {shown} is never closed"),
                    ));
                    blank(&mut out, &b[i..]);
                    i = b.len();
                }
            }
            continue;
        }
        match c {
            b'(' | b'[' | b'{' => stack.push((c, i)),
            b')' | b']' | b'}' => match stack.pop() {
                Some((open, _)) if close_of(open) == c => {}
                Some((open, at)) => {
                    let (ol, oc) = pos(q, at);
                    r.error(Diagnostic::at(
                        q,
                        i,
                        "unbalanced_bracket",
                        format!(
                            "`{}` does not close `{}` opened at line {ol} column {oc}",
                            c as char, open as char
                        ),
                    ));
                }
                None => r.error(Diagnostic::at(
                    q,
                    i,
                    "unbalanced_bracket",
                    format!("`{}` has no matching opening bracket", c as char),
                )),
            },
            b'|' if stack.is_empty() => s.pipes.push(i),
            _ => {}
        }
        out.push(c);
        i += 1;
    }
    for (open, at) in stack {
        r.error(Diagnostic::at(
            q,
            at,
            "unbalanced_bracket",
            format!("`{}` is never closed", open as char),
        ));
    }
    // Masking replaces whole multi-byte sequences inside strings/comments with
    // spaces and copies everything else verbatim, so this is still UTF-8.
    s.masked = String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    s
}

fn pos(q: &str, at: usize) -> (u32, u32) {
    let d = Diagnostic::at(q, at, "", "");
    (d.line.unwrap_or(0), d.column.unwrap_or(0))
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// Words of a masked stage with their byte offsets (relative to `base`):
/// runs of characters that are not whitespace.
pub(crate) fn words(stage: &str, base: usize) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in stage.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push((base + s, stage.get(s..i).unwrap_or_default()));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((base + s, stage.get(s..).unwrap_or_default()));
    }
    out
}

/// The first word of a stage (leading whitespace skipped) and its offset.
pub(crate) fn first_word(stage: &str, base: usize) -> Option<(usize, &str)> {
    let trimmed = stage.trim_start();
    let off = stage.len() - trimmed.len();
    let end = trimmed
        .find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | ',' | ';'))
        .unwrap_or(trimmed.len());
    let w = trimmed.get(..end)?;
    (!w.is_empty()).then_some((base + off, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPL: Syntax = Syntax {
        single_quote: true,
        triple_quote: false,
        backtick: true,
        triple_backtick_comment: true,
        line_comment: false,
        block_comment: false,
    };

    #[test]
    fn masks_strings_and_finds_top_level_pipes() {
        let mut r = Report::default();
        let s = scan(r#"a="x|y" | b [search c | d] | e"#, SPL, &mut r);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(s.pipes.len(), 2);
        assert_eq!(s.literals.len(), 1);
        assert_eq!(s.literals[0].body, "x|y");
        assert_eq!(s.masked.len(), r#"a="x|y" | b [search c | d] | e"#.len());
    }

    #[test]
    fn unbalanced_forms_name_the_position() {
        let mut r = Report::default();
        scan("a\n b=\"x", SPL, &mut r);
        assert_eq!(r.errors[0].code, "unbalanced_quote");
        assert_eq!((r.errors[0].line, r.errors[0].column), (Some(2), Some(4)));

        let mut r = Report::default();
        scan("(a]", SPL, &mut r);
        assert_eq!(r.errors[0].column, Some(3));
        assert!(
            r.errors[0].message.contains("line 1 column 1"),
            "{:?}",
            r.errors
        );

        let mut r = Report::default();
        scan("x ( y", SPL, &mut r);
        assert_eq!(r.errors[0].message, "`(` is never closed");
        assert_eq!(r.errors[0].column, Some(3));

        let mut r = Report::default();
        scan("x )", SPL, &mut r);
        assert!(r.errors[0].message.contains("no matching"));
    }

    #[test]
    fn escapes_and_comments() {
        let mut r = Report::default();
        scan(r#"a="x\"y" ```note "```"#, SPL, &mut r);
        assert!(r.is_ok(), "{r:?}");
    }
}
