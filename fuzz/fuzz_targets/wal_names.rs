//! Fuzz the PostgreSQL text parsers: WAL file names, LSNs, timeline history files and page headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walrs::pg::{Lsn, LongPageHeader, TimeLineId, TimelineHistory, WalFileName};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = WalFileName::parse(s) {
            assert_eq!(n.as_str(), s);
            assert!(!s.contains('/'));
        }
        if let Ok(l) = s.parse::<Lsn>() {
            assert_eq!(l.to_string().parse::<Lsn>().ok(), Some(l));
        }
    }
    if let Ok(t) = TimeLineId::new(5) {
        let _ = TimelineHistory::parse(t, data);
    }
    if let Ok(h) = LongPageHeader::decode(data) {
        assert_eq!(LongPageHeader::decode(&h.encode()).ok(), Some(h));
    }
});
