//! Fixed test keys shared by the fuzz targets and the corpus generator.
//!
//! The `open_job` target needs a key pair the seed jobs are sealed with, so
//! that seeds get past the signature check and exercise decryption and spec
//! parsing. These keys are public test values: never use them elsewhere.
//!
//! # Layout
//! - `fuzz_targets/decode_frames.rs`: WebSocket frame decoding, both directions.
//! - `fuzz_targets/open_job.rs`: `verify_job` then `open_job` on arbitrary `SealedJob` JSON.
//! - `fuzz_targets/enroll_token.rs`: `EnrollmentToken::parse`.
//! - `src/bin/gen_corpus.rs`: writes the seed corpora under `corpus/<target>/`.

use picket_shared::{AgentKeys, ServerSigningKey};

/// The server signing key the fuzzed jobs are pinned to (test value).
pub fn server_key() -> ServerSigningKey {
    ServerSigningKey::from_seed(&[0x51; 32])
}

/// The agent the fuzzed jobs are sealed to (test values).
pub fn agent_keys() -> AgentKeys {
    AgentKeys::from_bytes(&[0xA7; 32], &[0xA8; 32])
}
