//! Fuzz the envelope decoder: arbitrary bytes, with and without a key, must never panic, and
//! anything the decoder accepts must round-trip through the encoder's checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrs::codec::{MasterKey, decode_to_vec};

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_bytes([7; 32]);
    for k in [None, Some(&key)] {
        if let Ok((plain, summary)) = decode_to_vec(data, "000000010000000000000001", k) {
            assert_eq!(plain.len() as u64, summary.plain_len);
            assert_eq!(summary.stored_len, data.len() as u64);
        }
    }
});
