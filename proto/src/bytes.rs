//! Byte fields carried as standard base64 (with padding) inside JSON.
//!
//! Fixed-size fields ([`B64`]) refuse any other length at decode time, and
//! variable fields ([`B64Vec`]) are bounded by the frame cap, so a decoded
//! message never holds a surprise-sized buffer.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Exactly `N` bytes, encoded as base64 (keys, nonces, signatures).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct B64<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for B64<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B64<{N}>({})", STANDARD.encode(self.0))
    }
}

impl<const N: usize> Serialize for B64<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for B64<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: &str = <&str>::deserialize(d)?;
        // base64 of N bytes is at most 4*ceil(N/3) characters; refuse early.
        if s.len() > N.div_ceil(3) * 4 {
            return Err(de::Error::custom(format!("expected base64 of {N} bytes")));
        }
        let v = STANDARD
            .decode(s)
            .map_err(|_| de::Error::custom("invalid base64"))?;
        let arr: [u8; N] = v
            .try_into()
            .map_err(|_| de::Error::custom(format!("expected base64 of {N} bytes")))?;
        Ok(B64(arr))
    }
}

/// A variable-length byte string encoded as base64 (sealed header, ciphertext).
/// Its size is bounded by the frame cap enforced before parsing.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct B64Vec(pub Vec<u8>);

impl fmt::Debug for B64Vec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B64Vec({} bytes)", self.0.len())
    }
}

impl Serialize for B64Vec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64Vec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: &str = <&str>::deserialize(d)?;
        STANDARD
            .decode(s)
            .map(B64Vec)
            .map_err(|_| de::Error::custom("invalid base64"))
    }
}

/// SHA-256 fingerprint of the server's Ed25519 job-signing public key, shown
/// and transported as 64 lowercase hex characters. It is the key id in job
/// headers and what an enrollment token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyFingerprint(pub [u8; 32]);

impl KeyFingerprint {
    /// Lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }

    /// Parses the 64-character hex form (either case).
    ///
    /// # Errors
    /// Returns [`crate::ProtoError::InvalidField`] if the string is not 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, crate::ProtoError> {
        let bad = crate::ProtoError::InvalidField {
            field: "key fingerprint",
            reason: "expected 64 hexadecimal characters",
        };
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(bad);
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(bad.clone())?;
            let lo = hex_val(pair[1]).ok_or(bad.clone())?;
            out[i] = (hi << 4) | lo;
        }
        Ok(KeyFingerprint(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyFingerprint({})", self.to_hex())
    }
}

impl fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for KeyFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for KeyFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: &str = <&str>::deserialize(d)?;
        KeyFingerprint::from_hex(s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_size_refuses_other_lengths() {
        let ok: B64<4> = serde_json::from_str("\"AQIDBA==\"").unwrap();
        assert_eq!(ok.0, [1, 2, 3, 4]);
        assert!(serde_json::from_str::<B64<4>>("\"AQID\"").is_err());
        assert!(serde_json::from_str::<B64<4>>("\"AQIDBAU=\"").is_err());
        assert!(serde_json::from_str::<B64<4>>("\"!!!!\"").is_err());
    }

    #[test]
    fn fingerprint_round_trips_and_rejects_garbage() {
        let f = KeyFingerprint([0xab; 32]);
        assert_eq!(KeyFingerprint::from_hex(&f.to_hex()).unwrap(), f);
        assert!(KeyFingerprint::from_hex("zz").is_err());
        assert!(KeyFingerprint::from_hex(&"g".repeat(64)).is_err());
    }
}
