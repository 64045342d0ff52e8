//! Enrollment token parsing on arbitrary text: never panics, and a parsed
//! token's text form parses back to the same token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picket_proto::EnrollmentToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = EnrollmentToken::parse(text) {
        assert_eq!(EnrollmentToken::parse(&token.to_text()).ok(), Some(token));
    }
});
