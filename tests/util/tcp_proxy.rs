//! A fault-injecting TCP proxy for protocols other than HTTP (the MariaDB replication stream):
//! forwards bytes both ways and, once, flips one byte of the server-to-client stream at a given
//! offset of a connection.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct TcpFaultProxy {
    pub port: u16,
    /// Offset in a connection's server-to-client stream of the byte to flip (u64::MAX: never).
    flip_at: Arc<AtomicU64>,
    fired: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    inflate: Arc<AtomicBool>,
}

impl TcpFaultProxy {
    pub fn start(upstream: SocketAddr) -> TcpFaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let flip_at = Arc::new(AtomicU64::new(u64::MAX));
        let fired = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let inflate = Arc::new(AtomicBool::new(false));
        let (f, d, c, inf) = (flip_at.clone(), fired.clone(), connections.clone(), inflate.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, None));
                let (f, d) = (f.clone(), d.clone());
                if inf.swap(false, Ordering::SeqCst) {
                    let d2 = d.clone();
                    std::thread::spawn(move || pump_inflating(server, client, d2));
                } else {
                    std::thread::spawn(move || pump(server, client, Some((f, d))));
                }
            }
        });
        TcpFaultProxy { port, flip_at, fired, connections, inflate }
    }

    /// In the next connection, adds 1000 to the `event_size` of the first binlog event over
    /// 1 MB (MySQL protocol framing, no TLS, no compression): the event claims more bytes than
    /// its packet holds. Once.
    pub fn inflate_big_event_once(&self) {
        self.fired.store(false, Ordering::SeqCst);
        self.inflate.store(true, Ordering::SeqCst);
    }

    /// Flips the byte at `offset` of the next server-to-client stream that reaches it, once.
    pub fn flip_once_at(&self, offset: u64) {
        self.fired.store(false, Ordering::SeqCst);
        self.flip_at.store(offset, Ordering::SeqCst);
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, fault: Option<(Arc<AtomicU64>, Arc<AtomicBool>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((flip_at, fired)) = &fault {
            let f = flip_at.load(Ordering::SeqCst);
            if f >= at && f < at + n as u64 && !fired.swap(true, Ordering::SeqCst) {
                buf[(f - at) as usize] ^= 0x01;
            }
        }
        at += n as u64;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn pump_inflating(mut from: TcpStream, mut to: TcpStream, fired: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    'outer: loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while pending.len() >= 4 {
            let len = u32::from_le_bytes([pending[0], pending[1], pending[2], 0]) as usize;
            if pending.len() < 4 + len {
                break;
            }
            let mut pkt: Vec<u8> = pending.drain(..4 + len).collect();
            // Payload: 0x00 (OK marker), then the event; event_size at event offset 9.
            if len > 1_000_000 && pkt[4] == 0 && !fired.swap(true, Ordering::SeqCst) {
                let at = 4 + 1 + 9;
                let size = u32::from_le_bytes(pkt[at..at + 4].try_into().unwrap()) + 1000;
                pkt[at..at + 4].copy_from_slice(&size.to_le_bytes());
            }
            if to.write_all(&pkt).is_err() {
                break 'outer;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
