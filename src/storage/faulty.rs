//! Fault injection around any [`Storage`]: errors before or after an operation, delays, and
//! reads that are cut short, broken or corrupted. Drives the failure tests: whatever a backend
//! does, walrs must never report success for data that is not whole and never leave a partial file.

use std::io::Read;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Body, ErrorKind, Listing, ObjectKey, ObjectMeta, PutOutcome, Storage, StorageError};

/// The operations a rule can target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// `get`.
    Get,
    /// `get_range`.
    GetRange,
    /// `put`.
    Put,
    /// `put_if_absent`.
    PutIfAbsent,
    /// `head`.
    Head,
    /// `list`.
    List,
    /// `delete`.
    Delete,
    /// Every operation.
    Any,
}

/// What happens to a targeted call.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Fail before touching the inner storage.
    Error(ErrorKind),
    /// Do the operation, then report a failure (the "did it land?" ambiguity of networks).
    ErrorAfter(ErrorKind),
    /// Sleep before the operation.
    Delay(Duration),
    /// A read that ends cleanly after this many bytes.
    TruncateRead(u64),
    /// A read that fails with an I/O error after this many bytes.
    BreakRead(u64),
    /// A read with the byte at this offset flipped.
    CorruptRead(u64),
}

/// When a fault applies: to calls of `op`, after letting `skip` through, for `times` calls.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// Targeted operation.
    pub op: Op,
    /// Matching calls to let through first.
    pub skip: u32,
    /// Matching calls to fault (`u32::MAX`: all of them).
    pub times: u32,
    /// The fault.
    pub fault: Fault,
}

impl FaultRule {
    /// Fault every call of `op`.
    pub fn always(op: Op, fault: Fault) -> Self {
        FaultRule { op, skip: 0, times: u32::MAX, fault }
    }

    /// Fault only the next call of `op`.
    pub fn once(op: Op, fault: Fault) -> Self {
        FaultRule { op, skip: 0, times: 1, fault }
    }
}

/// A storage wrapper that injects faults according to its rules and counts them.
pub struct Faulty<S> {
    inner: S,
    rules: Mutex<Vec<(FaultRule, u32)>>,
    injected: AtomicU64,
}

impl<S: Storage> Faulty<S> {
    /// Wraps `inner` with no rules.
    pub fn new(inner: S) -> Self {
        Faulty { inner, rules: Mutex::new(Vec::new()), injected: AtomicU64::new(0) }
    }

    /// Adds a rule.
    pub fn add(&self, rule: FaultRule) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).push((rule, 0));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The wrapped storage.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn pick(&self, op: Op) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for (rule, seen) in rules.iter_mut() {
            if rule.op != op && rule.op != Op::Any {
                continue;
            }
            *seen += 1;
            let n = *seen - 1;
            if n >= rule.skip && (rule.times == u32::MAX || n - rule.skip < rule.times) {
                self.injected.fetch_add(1, Ordering::Relaxed);
                return Some(rule.fault.clone());
            }
        }
        None
    }

    fn run<T>(
        &self,
        op: Op,
        opname: &'static str,
        key: &str,
        f: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let err = |kind| StorageError::new(kind, opname, key, "injected fault");
        match self.pick(op) {
            Some(Fault::Error(kind)) => Err(err(kind)),
            Some(Fault::ErrorAfter(kind)) => {
                let _ = f();
                Err(err(kind))
            }
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                f()
            }
            _ => f(),
        }
    }
}

struct FaultyReader<R> {
    inner: R,
    pos: u64,
    fault: Fault,
}

impl<R: Read> Read for FaultyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let limit = match self.fault {
            Fault::TruncateRead(n) | Fault::BreakRead(n) => Some(n),
            _ => None,
        };
        let mut want = buf.len();
        if let Some(n) = limit {
            let left = n.saturating_sub(self.pos);
            if left == 0 {
                return match self.fault {
                    Fault::BreakRead(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected fault: connection reset",
                    )),
                    _ => Ok(0),
                };
            }
            want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let got = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        if let Fault::CorruptRead(at) = self.fault
            && at >= self.pos
            && at < self.pos + got as u64
            && let Some(b) = buf.get_mut(usize::try_from(at - self.pos).unwrap_or(usize::MAX))
        {
            *b ^= 0x01;
        }
        self.pos += got as u64;
        Ok(got)
    }
}

impl<S: Storage> Storage for Faulty<S> {
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let k = key.as_str();
        match self.pick(Op::Get) {
            Some(Fault::Error(kind)) => Err(StorageError::new(kind, "read", k, "injected fault")),
            Some(Fault::ErrorAfter(kind)) => {
                let _ = self.inner.get(key)?;
                Err(StorageError::new(kind, "read", k, "injected fault"))
            }
            Some(Fault::Delay(d)) => {
                std::thread::sleep(d);
                self.inner.get(key)
            }
            Some(fault) => {
                let inner = self.inner.get(key)?;
                Ok(Box::new(FaultyReader { inner, pos: 0, fault }))
            }
            None => self.inner.get(key),
        }
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        self.run(Op::GetRange, "read", key.as_str(), || self.inner.get_range(key, offset, len))
    }

    fn put(&self, key: &ObjectKey, body: &mut dyn Body) -> Result<ObjectMeta, StorageError> {
        self.run(Op::Put, "write", key.as_str(), || self.inner.put(key, body))
    }

    fn put_if_absent(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
    ) -> Result<PutOutcome, StorageError> {
        self.run(Op::PutIfAbsent, "write", key.as_str(), || self.inner.put_if_absent(key, body))
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        self.run(Op::Head, "stat", key.as_str(), || self.inner.head(key))
    }

    fn list(&self, prefix: &str) -> Result<Listing<'_>, StorageError> {
        self.run(Op::List, "list", prefix, || self.inner.list(prefix))
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.run(Op::List, "list", prefix, || self.inner.list_prefixes(prefix))
    }

    fn modified(&self, key: &ObjectKey) -> Result<Option<std::time::SystemTime>, StorageError> {
        self.run(Op::Head, "stat", key.as_str(), || self.inner.modified(key))
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.run(Op::Delete, "delete", key.as_str(), || self.inner.delete(key))
    }

    fn describe(&self) -> String {
        format!("faulty+{}", self.inner.describe())
    }
    fn temporaries(
        &self,
        prefix: &str,
        remove: bool,
    ) -> Result<Vec<super::Temporary>, StorageError> {
        self.inner.temporaries(prefix, remove)
    }
}
