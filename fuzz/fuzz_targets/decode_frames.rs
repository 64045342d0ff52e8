//! Frame decoding on arbitrary text: never panics, and whatever decodes
//! re-encodes to a frame that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use picket_proto::{DEFAULT_MAX_FRAME_BYTES, decode_agent_msg, decode_server_msg, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = decode_agent_msg(text, DEFAULT_MAX_FRAME_BYTES)
        && let Ok(again) = encode(&msg)
    {
        assert_eq!(decode_agent_msg(&again, usize::MAX).ok(), Some(msg));
    }
    if let Ok(msg) = decode_server_msg(text, DEFAULT_MAX_FRAME_BYTES)
        && let Ok(again) = encode(&msg)
    {
        assert_eq!(decode_server_msg(&again, usize::MAX).ok(), Some(msg));
    }
});
