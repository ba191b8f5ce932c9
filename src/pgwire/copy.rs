//! `COPY` in both directions on a [`Conn`], in the simple query protocol: `COPY ... TO STDOUT`
//! hands the server's data to a sink as it arrives, `COPY ... FROM STDIN` streams a reader to the
//! server. Memory is bounded by one message (the server's CopyData messages are a row or a few
//! rows each) and by [`COPY_IN_CHUNK`]. Data is passed through as bytes in whatever `COPY` format
//! the statement asks for (text, CSV, binary): the format is the caller's business.
//!
//! Protocol: "COPY Operations" in the frontend/backend protocol chapter of the PostgreSQL
//! documentation (CopyOutResponse `H`, CopyInResponse `G`, CopyData `d`, CopyDone `c`, CopyFail
//! `f`, then CommandComplete `C` and ReadyForQuery `Z`).

use std::io::Read;

use super::{Conn, proto_err, server_error};
use crate::error::{Kind, Result, WalrsError};

/// Bytes of input sent in one CopyData message by [`Conn::copy_in`].
pub const COPY_IN_CHUNK: usize = 256 * 1024;

/// What [`Conn::copy_out`] runs.
const OUT: &str = "COPY ... TO STDOUT";
/// What [`Conn::copy_in`] runs.
const IN: &str = "COPY ... FROM STDIN";

/// The error for a statement that is not the copy asked for.
fn not_copy(sql: &str, what: &str) -> WalrsError {
    WalrsError::new(Kind::InvalidInput, format!("{sql:?} is not a {what}"))
}

/// The row count of a `COPY n` command tag.
fn copied_rows(tag: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(tag.strip_suffix(&[0]).unwrap_or(tag)).ok()?;
    text.strip_prefix("COPY ")?.trim().parse().ok()
}

/// One frontend message: its type byte, the length, the body.
fn message(tag: u8, body: &[u8]) -> Result<Vec<u8>> {
    let len = i32::try_from(body.len() + 4)
        .map_err(|_| WalrsError::new(Kind::Internal, "a COPY message over 2 GiB"))?;
    let mut m = Vec::with_capacity(body.len() + 5);
    m.push(tag);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(body);
    Ok(m)
}

impl Conn {
    /// After a statement that turned out not to be the copy asked for: its results are read
    /// (and dropped) up to ReadyForQuery, so the connection stays usable. `first` is the type
    /// of the message that showed it.
    fn not_a_copy(&mut self, sql: &str, what: &str, first: u8) -> Result<u64> {
        let mut tag = first;
        loop {
            match tag {
                // A COPY in the other direction waits for input: end it.
                b'G' => self.send(&message(b'f', b"not the copy asked for\0")?)?,
                b'Z' => break,
                _ => {}
            }
            tag = self.recv()?.tag;
        }
        Err(not_copy(sql, what))
    }

    /// Reads messages until ReadyForQuery; the first ErrorResponse met is the result, else the
    /// row count of the last CommandComplete.
    fn finish_query(&mut self, mut err: Option<WalrsError>) -> Result<u64> {
        let mut rows = 0;
        loop {
            let m = self.recv()?;
            match m.tag {
                b'C' => rows = copied_rows(&m.body).unwrap_or(0),
                b'E' if err.is_none() => err = Some(server_error(&m.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// Runs `sql`, a `COPY ... TO STDOUT`, and hands the bytes of every CopyData message to
    /// `sink` in order. Returns the number of rows the server reports. A server error (a wrong
    /// statement, a failure during the copy) is returned once the server is ready for the next
    /// query, and the connection stays usable; an error from `sink` is returned at once, and the
    /// connection must then be dropped (the server is still sending). Another statement is
    /// refused (kind `InvalidInput`) after its results are read past.
    pub fn copy_out(
        &mut self,
        sql: &str,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        self.query(sql)?;
        loop {
            let m = self.recv()?;
            match m.tag {
                b'H' => break,
                b'E' => return self.finish_query(Some(server_error(&m.body))),
                b'N' | b'S' => {}
                b'Z' => return Err(not_copy(sql, OUT)),
                t => return self.not_a_copy(sql, OUT, t),
            }
        }
        loop {
            let m = self.recv()?;
            match m.tag {
                b'd' => sink(&m.body)?,
                b'c' => return self.finish_query(None),
                b'E' => return self.finish_query(Some(server_error(&m.body))),
                b'N' | b'S' => {}
                t => {
                    return Err(proto_err(format!(
                        "unexpected message {:?} in COPY data",
                        t as char
                    )));
                }
            }
        }
    }

    /// Runs `sql`, a `COPY ... FROM STDIN`, and sends everything `source` yields as the copy's
    /// data (in messages of at most [`COPY_IN_CHUNK`] bytes), then CopyDone. Returns the number of
    /// rows the server reports. A failure to read `source` is sent as CopyFail, so the server
    /// rolls the copy back, and is returned (kind `Io`); a server error is returned once the
    /// server is ready for the next query. Either way the connection stays usable. Another
    /// statement is refused (kind `InvalidInput`) after its results are read past.
    pub fn copy_in(&mut self, sql: &str, source: &mut dyn Read) -> Result<u64> {
        self.query(sql)?;
        loop {
            let m = self.recv()?;
            match m.tag {
                b'G' => break,
                b'E' => return self.finish_query(Some(server_error(&m.body))),
                b'N' | b'S' => {}
                b'Z' => return Err(not_copy(sql, IN)),
                t => return self.not_a_copy(sql, IN, t),
            }
        }
        // A server error during the copy arrives after CopyDone: the server drops the rest of
        // the data (simple query protocol), then reports it and is ready again.
        let mut buf = vec![0u8; COPY_IN_CHUNK];
        loop {
            let n = match crate::bytes::read_full(source, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let why = format!("reading the COPY input: {e}");
                    let mut fail = why.clone().into_bytes();
                    fail.push(0);
                    self.send(&message(b'f', &fail)?)?;
                    // The server's own error ("COPY from stdin failed: ...") says the same.
                    let _ = self.finish_query(None);
                    return Err(WalrsError::new(Kind::Io, why));
                }
            };
            if n == 0 {
                break;
            }
            self.send(&message(b'd', buf.get(..n).unwrap_or_default())?)?;
        }
        self.send(&message(b'c', &[])?)?;
        self.finish_query(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_counts_and_messages() {
        assert_eq!(copied_rows(b"COPY 42\0"), Some(42));
        assert_eq!(copied_rows(b"COPY 0"), Some(0));
        assert_eq!(copied_rows(b"INSERT 0 1\0"), None);
        assert_eq!(message(b'c', &[]).unwrap(), [b'c', 0, 0, 0, 4]);
        assert_eq!(message(b'd', b"ab").unwrap(), [b'd', 0, 0, 0, 6, b'a', b'b']);
    }
}
