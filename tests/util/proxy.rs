//! A fault-injecting HTTP proxy between walrs and the S3 test server: it forwards each request
//! (one per connection) and, when a rule matches, answers 500 or 503 SlowDown itself, resets the
//! connection in the middle of the response body, stalls, sends a truncated body, refuses the
//! connection, or flips a byte of the request or response body on the way (headers untouched, as
//! a faulty NIC or middlebox would). Rules can be limited to a path and to a share of the
//! requests. It counts every fault it injects, and the flips apart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpFault {
    /// `500 InternalError` from the proxy.
    Status500,
    /// `503 SlowDown` from the proxy.
    SlowDown,
    /// Forward, then send the head and half the body and reset the connection.
    ResetMidBody,
    /// Read the request and never answer.
    Stall,
    /// Forward, then send the head and half the body and close cleanly.
    TruncateBody,
    /// Reset the connection without reading the request.
    Refuse,
    /// Forward the request with one byte of its body flipped (requests without a body pass).
    FlipRequestBody,
    /// Forward, then answer with one byte of the response body flipped (an empty body passes).
    FlipResponseBody,
}

#[derive(Clone, Debug)]
pub struct Rule {
    /// HTTP method to match (`GET`, `PUT`, ...); any when `None`.
    pub method: Option<&'static str>,
    /// Matching requests to let through first.
    pub skip: u32,
    /// Matching requests to fault (`u32::MAX`: all).
    pub times: u32,
    pub fault: HttpFault,
    /// Only requests whose target contains this (e.g. `/wal/`); any when `None`.
    pub path: Option<&'static str>,
    /// The share of the matching requests that is faulted, in percent (drawn from a seeded
    /// generator, so a run is reproducible for a given order of requests).
    pub percent: u32,
}

impl Rule {
    pub fn new(method: Option<&'static str>, times: u32, fault: HttpFault) -> Self {
        Rule { method, skip: 0, times, fault, path: None, percent: 100 }
    }

    /// Only requests whose target contains `path`.
    pub fn on_path(mut self, path: &'static str) -> Self {
        self.path = Some(path);
        self
    }

    /// Only `percent` of the matching requests.
    pub fn percent(mut self, percent: u32) -> Self {
        self.percent = percent;
        self
    }
}

#[derive(Default)]
struct Plan {
    rules: Vec<(Rule, u32)>,
    /// State of the generator for `percent` and flip positions (splitmix64).
    rng: u64,
}

impl Plan {
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    injected: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    flips: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(Plan::default()));
        let injected = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let flips = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let (p, inj, reqs) = (plan.clone(), injected.clone(), requests.clone());
        let fl = flips.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        r = listener.accept() => {
                            let Ok((sock, _)) = r else { continue };
                            let (p, inj, reqs) = (p.clone(), inj.clone(), reqs.clone());
                            let counters = Counters { injected: inj, requests: reqs, flips: fl.clone() };
                            tokio::spawn(async move { let _ = handle(sock, upstream, p, counters).await; });
                        }
                        _ = &mut rx => break,
                    }
                }
            });
            rt.shutdown_background();
        });
        FaultProxy { addr, plan, injected, requests, flips, stop: Some(tx), thread: Some(thread) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add(&self, rule: Rule) {
        self.plan.lock().unwrap().rules.push((rule, 0));
    }

    pub fn clear(&self) {
        self.plan.lock().unwrap().rules.clear();
    }

    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bytes flipped so far (requests and responses).
    pub fn flips(&self) -> u64 {
        self.flips.load(Ordering::SeqCst)
    }

    fn pick(plan: &Mutex<Plan>, method: &str, target: &str) -> Option<HttpFault> {
        let mut plan = plan.lock().unwrap();
        let mut hit = None;
        for (rule, seen) in plan.rules.iter_mut() {
            if rule.method.is_some_and(|m| m != method)
                || rule.path.is_some_and(|p| !target.contains(p))
            {
                continue;
            }
            *seen += 1;
            let n = *seen - 1;
            if n >= rule.skip && (rule.times == u32::MAX || n - rule.skip < rule.times) {
                hit = Some((rule.fault, rule.percent));
                break;
            }
        }
        let (fault, percent) = hit?;
        (percent >= 100 || plan.next() % 100 < u64::from(percent)).then_some(fault)
    }

    /// Flips one byte of `body[from..]` (if there is one) at a drawn position.
    fn flip(plan: &Mutex<Plan>, body: &mut [u8], from: usize) -> bool {
        if body.len() <= from {
            return false;
        }
        let mut plan = plan.lock().unwrap();
        let at = from + (plan.next() % (body.len() - from) as u64) as usize;
        let bit = 1u8 << (plan.next() % 8);
        body[at] ^= bit;
        true
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a request or response head (through the blank line); returns head and any extra bytes.
async fn read_head(s: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok(Some((buf, rest)));
        }
        let n = s.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// Closes with a TCP reset (SO_LINGER 0): the peer sees "connection reset", not a clean end.
#[allow(deprecated)] // a zero linger does not block on drop
fn reset(sock: TcpStream) {
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(sock);
}

struct Counters {
    injected: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    flips: Arc<AtomicU64>,
}

impl Counters {
    fn flipped(&self) {
        self.injected.fetch_add(1, Ordering::SeqCst);
        self.flips.fetch_add(1, Ordering::SeqCst);
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    counters: Counters,
) -> std::io::Result<()> {
    let Some((head, mut body)) = read_head(&mut client).await? else { return Ok(()) };
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
    let mut words = line.split(' ');
    let method = words.next().unwrap_or_default().to_string();
    let target = words.next().unwrap_or_default().to_string();
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let fault = FaultProxy::pick(&plan, &method, &target);
    let flip_fault =
        matches!(fault, Some(HttpFault::FlipRequestBody | HttpFault::FlipResponseBody));
    if fault.is_some() && !flip_fault {
        counters.injected.fetch_add(1, Ordering::SeqCst);
    }
    if fault == Some(HttpFault::Refuse) {
        reset(client);
        return Ok(());
    }
    let want = content_length(&head);
    while body.len() < want {
        let mut tmp = vec![0u8; 65536];
        let n = client.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let canned = |status: &str, code: &str| {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
        );
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        )
    };
    match fault {
        Some(HttpFault::Status500) => {
            client
                .write_all(canned("500 Internal Server Error", "InternalError").as_bytes())
                .await?;
            return client.shutdown().await;
        }
        Some(HttpFault::SlowDown) => {
            client.write_all(canned("503 Slow Down", "SlowDown").as_bytes()).await?;
            return client.shutdown().await;
        }
        Some(HttpFault::Stall) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        _ => {}
    }
    // Forward with "Connection: close" so the upstream ends the response with EOF.
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut fwd = String::new();
    for line in text.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        if line.is_empty() {
            continue;
        }
        fwd.push_str(line);
        fwd.push_str("\r\n");
    }
    fwd.push_str("Connection: close\r\n\r\n");
    if fault == Some(HttpFault::FlipRequestBody) && FaultProxy::flip(&plan, &mut body, 0) {
        counters.flipped();
    }
    let mut up = TcpStream::connect(upstream).await?;
    // The upstream may answer (412, say) and close before reading the whole body: keep going.
    if up.write_all(fwd.as_bytes()).await.is_ok() {
        let _ = up.write_all(&body).await;
    }
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    let body_at = find(&resp, b"\r\n\r\n").map(|i| i + 4).unwrap_or(resp.len());
    if fault == Some(HttpFault::FlipResponseBody) && FaultProxy::flip(&plan, &mut resp, body_at) {
        counters.flipped();
    }
    match fault {
        Some(HttpFault::ResetMidBody) | Some(HttpFault::TruncateBody) => {
            // Half the body; for an empty body (a PUT's answer), half the head.
            let cut = if resp.len() > body_at {
                body_at + (resp.len() - body_at) / 2
            } else {
                body_at / 2
            };
            client.write_all(&resp[..cut]).await?;
            client.flush().await?;
            if fault == Some(HttpFault::ResetMidBody) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                reset(client);
            } else {
                client.shutdown().await?;
            }
        }
        _ => {
            client.write_all(&resp).await?;
            client.shutdown().await?;
        }
    }
    Ok(())
}
