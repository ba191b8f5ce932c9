//! TCP connections with deadlines, shared by the PostgreSQL replication client and the MySQL
//! client.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connects to `host:port`, trying every address it resolves to in turn, each with `timeout`;
/// the stream gets `timeout` for every read and write, and TCP_NODELAY.
pub fn connect_tcp(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = None;
    for a in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}
