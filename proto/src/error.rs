//! The error returned when bytes from the network do not form a valid message.

/// Why a frame, field or token was refused. Every variant names the problem
/// precisely enough to log, but never echoes the offending input back.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// The frame is larger than the configured cap; it was not parsed.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Size of the refused frame.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The frame carries a protocol version this build does not speak.
    #[error("unsupported protocol version {found} (this build speaks {expected})")]
    UnsupportedVersion {
        /// Version found in the frame.
        found: u64,
        /// Version this build speaks.
        expected: u8,
    },
    /// The frame is not valid JSON or does not have the shape of any message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A field is present and well-formed JSON but outside its allowed bounds.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// Name of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An enrollment token string does not have the `pkt1.<secret>.<fingerprint>` form.
    #[error("enrollment token is malformed: {0}")]
    BadToken(&'static str),
}

impl ProtoError {
    /// Builds a [`ProtoError::Malformed`] from a serde_json error without
    /// including any of the input (serde_json messages only name types and positions).
    pub(crate) fn from_json(err: &serde_json::Error) -> Self {
        ProtoError::Malformed(format!(
            "{} at line {} column {}",
            classify(err),
            err.line(),
            err.column()
        ))
    }
}

fn classify(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match err.classify() {
        Category::Io => "i/o error".to_owned(),
        Category::Syntax => "invalid JSON".to_owned(),
        Category::Eof => "truncated JSON".to_owned(),
        // Data errors may quote a short piece of the input (an unknown variant
        // name); keep it bounded and printable so a hostile peer cannot forge log lines.
        Category::Data => {
            let s = err.to_string();
            let s = match s.rfind(" at line ") {
                Some(i) => &s[..i],
                None => &s[..],
            };
            s.chars().filter(|c| !c.is_control()).take(160).collect()
        }
    }
}
