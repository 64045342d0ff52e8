//! The agent's job path on arbitrary `SealedJob` JSON: `verify_job` under a
//! fixed pinned key, then `open_job`. Also calls `open_job` with the
//! unverified header (which the agent never does) so decryption and spec
//! parsing see hostile input even without a valid signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picket_proto::{JobHeader, SealedJob};
use picket_shared::seal::{open_job, peek_job_id, verify_job};

fuzz_target!(|data: &[u8]| {
    let Ok(job) = serde_json::from_slice::<SealedJob>(data) else {
        return;
    };
    let server = picket_fuzz::server_key();
    let agent = picket_fuzz::agent_keys();
    let _ = peek_job_id(&job);
    if let Ok(header) = verify_job(&job, &[server.verifying_key()]) {
        // A verified header is the job's own: opening may fail, never panic.
        let _ = open_job(&job, &header, &agent);
    }
    if let Ok(header) = serde_json::from_slice::<JobHeader>(&job.header.0) {
        let _ = open_job(&job, &header, &agent);
    }
});
