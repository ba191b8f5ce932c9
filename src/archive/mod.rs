//! The hot path PostgreSQL calls: `push` (archive_command) and `fetch` (restore_command).
//!
//! Both are blocking, single-pass and bounded in memory by one frame: `push` streams the WAL file
//! through the encoder into a conditional write; `fetch` streams the object through the decoder
//! into a temporary file beside the destination and renames it into place only after the whole
//! object has been verified.

pub mod fetch;
pub mod lookahead;
pub mod prefetch;
pub mod push;
pub mod pusher;
pub mod spool;

pub use fetch::{FetchOutcome, fetch};
pub use push::{PushOptions, PushOutcome, push};
