//! The only strings an agent may send: short, charset-restricted values that
//! cannot carry a log line. They are validated when decoded, so a message that
//! holds one out of bounds is refused as a whole.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $allowed:expr, $reason:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Maximum length in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps a string.
            ///
            /// # Errors
            /// [`ProtoError::InvalidField`] if it is empty, too long or has a character outside the allowed set.
            pub fn new(s: impl Into<String>) -> Result<Self, ProtoError> {
                let s = s.into();
                let allowed: fn(char) -> bool = $allowed;
                if s.is_empty() || s.len() > Self::MAX_LEN || !s.chars().all(allowed) {
                    return Err(ProtoError::InvalidField { field: $field, reason: $reason });
                }
                Ok($name(s))
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ProtoError;
            fn try_from(s: String) -> Result<Self, ProtoError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

bounded_text!(
    /// An agent build version such as `0.1.0` or `0.2.0-rc.1+abc`: up to 32
    /// characters of `[0-9A-Za-z.+-]`.
    AgentVersion,
    "version",
    32,
    |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'),
    "expected 1-32 characters of [0-9A-Za-z.+-]"
);

bounded_text!(
    /// A host name as reported at enrollment: up to 253 characters of
    /// `[0-9A-Za-z._-]` (DNS labels, NetBIOS names).
    Hostname,
    "hostname",
    253,
    |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'),
    "expected 1-253 characters of [0-9A-Za-z._-]"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_refuses_log_like_text() {
        assert!(AgentVersion::new("0.1.0-rc.1+g1234").is_ok());
        assert!(AgentVersion::new("").is_err());
        assert!(AgentVersion::new("0.1 failed login for bob").is_err());
        assert!(AgentVersion::new("1".repeat(33)).is_err());
        assert!(serde_json::from_str::<AgentVersion>("\"a\\nb\"").is_err());
    }

    #[test]
    fn hostname_bounds() {
        assert!(Hostname::new("siem-gw01.corp.example").is_ok());
        assert!(Hostname::new("a b").is_err());
        assert!(Hostname::new("a".repeat(254)).is_err());
    }
}
