//! An in-memory backend for tests and benches: a sorted map behind a mutex. Writes are atomic by
//! construction; nothing is durable.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::{Mutex, MutexGuard};

use super::{Body, ErrorKind, Listing, ObjectKey, ObjectMeta, PutOutcome, Storage, StorageError};

/// Objects in a map.
#[derive(Default, Debug)]
pub struct MemoryStorage {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn collect(key: &ObjectKey, body: &mut dyn Body) -> Result<Vec<u8>, StorageError> {
        let mut data = Vec::new();
        loop {
            match body.next_chunk() {
                Ok(Some(c)) => data.extend_from_slice(c),
                Ok(None) => return Ok(data),
                Err(e) => {
                    return Err(StorageError::new(
                        ErrorKind::Body,
                        "produce data for",
                        key.as_str(),
                        e,
                    ));
                }
            }
        }
    }

    fn not_found(op: &'static str, key: &ObjectKey) -> StorageError {
        StorageError::new(ErrorKind::NotFound, op, key.as_str(), "no such object")
    }
}

impl Storage for MemoryStorage {
    fn get(&self, key: &ObjectKey) -> Result<Box<dyn Read + Send + '_>, StorageError> {
        let data =
            self.map().get(key.as_str()).cloned().ok_or_else(|| Self::not_found("read", key))?;
        Ok(Box::new(Cursor::new(data)))
    }

    fn get_range(&self, key: &ObjectKey, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let map = self.map();
        let data = map.get(key.as_str()).ok_or_else(|| Self::not_found("read", key))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)).min(data.len());
        Ok(data.get(start..end).unwrap_or_default().to_vec())
    }

    fn put(&self, key: &ObjectKey, body: &mut dyn Body) -> Result<ObjectMeta, StorageError> {
        let data = Self::collect(key, body)?;
        let size = data.len() as u64;
        self.map().insert(key.as_str().to_owned(), data);
        Ok(ObjectMeta { key: key.clone(), size })
    }

    fn put_if_absent(
        &self,
        key: &ObjectKey,
        body: &mut dyn Body,
    ) -> Result<PutOutcome, StorageError> {
        if self.map().contains_key(key.as_str()) {
            return Ok(PutOutcome::Exists);
        }
        let data = Self::collect(key, body)?;
        let size = data.len() as u64;
        let mut map = self.map();
        if map.contains_key(key.as_str()) {
            return Ok(PutOutcome::Exists);
        }
        map.insert(key.as_str().to_owned(), data);
        Ok(PutOutcome::Created(ObjectMeta { key: key.clone(), size }))
    }

    fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>, StorageError> {
        Ok(self
            .map()
            .get(key.as_str())
            .map(|d| ObjectMeta { key: key.clone(), size: d.len() as u64 }))
    }

    fn list(&self, prefix: &str) -> Result<Listing<'_>, StorageError> {
        let items: Vec<_> = self
            .map()
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| {
                ObjectKey::new(k.clone()).map(|key| ObjectMeta { key, size: v.len() as u64 })
            })
            .collect();
        Ok(Box::new(items.into_iter()))
    }

    fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let mut out: Vec<String> = Vec::new();
        for k in self.map().keys().filter(|k| k.starts_with(prefix)) {
            if let Some((first, _)) = k.get(prefix.len()..).and_then(|r| r.split_once('/'))
                && out.last().map(String::as_str) != Some(first)
            {
                out.push(first.to_owned());
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        self.map().remove(key.as_str());
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".into()
    }
}
