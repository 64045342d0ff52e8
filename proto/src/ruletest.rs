//! Rule tests: what a `test_rule` job carries to the agent, and the per-case
//! counts that come back in [`crate::JobResult::test_counts`] (numbers only,
//! never event text).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Most test cases one job carries (and counts one result returns).
pub const MAX_TEST_CASES: usize = 50;

/// Most events one test case injects.
pub const MAX_EVENTS_PER_CASE: usize = 100;

/// A rule version's tests, sealed inside a `test_rule` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTest {
    /// Server id of the rule.
    pub rule_id: Uuid,
    /// Version under test.
    pub version: u32,
    /// The rule's match condition in the SIEM's count filter form (Splunk
    /// search terms, a KQL predicate, a Lucene query string); the connector
    /// bounds it to the test index or table, the `picket_test` tag and each
    /// case's time window.
    pub filter: String,
    /// The cases, in order; the result's counts follow this order.
    pub cases: Vec<TestCaseSpec>,
}

/// One case: events to inject. Whether they must match is the server's
/// business; the agent only counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCaseSpec {
    /// Flat events (field name to value), injected tagged `picket_test`.
    pub events: Vec<BTreeMap<String, String>>,
}

/// Matches counted per case, in case order. At most [`MAX_TEST_CASES`];
/// `Copy` so that [`crate::JobResult`] stays a plain value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TestCounts {
    len: u8,
    counts: [u32; MAX_TEST_CASES],
}

impl TestCounts {
    /// Counts from a slice; `None` when it has more than [`MAX_TEST_CASES`].
    pub fn new(counts: &[u32]) -> Option<Self> {
        if counts.len() > MAX_TEST_CASES {
            return None;
        }
        let mut out = TestCounts {
            len: u8::try_from(counts.len()).ok()?,
            counts: [0; MAX_TEST_CASES],
        };
        out.counts[..counts.len()].copy_from_slice(counts);
        Some(out)
    }

    /// The counts, in case order.
    pub fn as_slice(&self) -> &[u32] {
        &self.counts[..usize::from(self.len)]
    }
}

impl fmt::Debug for TestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for TestCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.as_slice())
    }
}

impl<'de> Deserialize<'de> for TestCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TestCounts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "at most {MAX_TEST_CASES} counts")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TestCounts, A::Error> {
                let mut out = TestCounts {
                    len: 0,
                    counts: [0; MAX_TEST_CASES],
                };
                while let Some(n) = seq.next_element::<u32>()? {
                    // Refuse as soon as the bound is passed, before reading the rest.
                    let slot = out.counts.get_mut(usize::from(out.len)).ok_or_else(|| {
                        serde::de::Error::invalid_length(MAX_TEST_CASES + 1, &self)
                    })?;
                    *slot = n;
                    out.len += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_are_bounded() {
        let c = TestCounts::new(&[3, 0, 7]).unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "[3,0,7]");
        assert_eq!(serde_json::from_str::<TestCounts>(&json).unwrap(), c);
        let too_many = format!("[{}]", vec!["1"; MAX_TEST_CASES + 1].join(","));
        assert!(serde_json::from_str::<TestCounts>(&too_many).is_err());
        assert!(TestCounts::new(&[0; MAX_TEST_CASES + 1]).is_none());
        assert!(serde_json::from_str::<TestCounts>("[-1]").is_err());
    }
}
