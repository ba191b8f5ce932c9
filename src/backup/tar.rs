//! Following a tar stream byte by byte without buffering it: where each entry's header starts
//! (so a stream can be cut into chunks at entry boundaries), and each regular file's path, size
//! and CRC-32C (the checksum PostgreSQL's backup manifest uses by default).

pub use crate::repo::FileEntry;

/// A parsed tar header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarHeader {
    /// Path (ustar prefix + name).
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Size of the data that follows.
    pub size: u64,
    /// Type flag (`0` file, `5` directory, `2` symlink, ...).
    pub typeflag: u8,
    /// Link target for links.
    pub link: String,
}

fn field(b: &[u8], at: usize, len: usize) -> &[u8] {
    let f = b.get(at..at + len).unwrap_or_default();
    let end = f.iter().position(|c| *c == 0).unwrap_or(f.len());
    f.get(..end).unwrap_or_default()
}

fn octal(b: &[u8], at: usize, len: usize) -> Option<u64> {
    let f = b.get(at..at + len)?;
    if f.first().is_some_and(|c| c & 0x80 != 0) {
        // GNU base-256 for large sizes.
        let mut v: u64 = u64::from(f.first()? & 0x7f);
        for c in f.get(1..)? {
            v = v.checked_mul(256)?.checked_add(u64::from(*c))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(f).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

impl TarHeader {
    /// Parses a 512-byte header; `None` for an all-zero block (end of archive) or garbage.
    pub fn parse(b: &[u8]) -> Option<TarHeader> {
        if b.len() < 512 || b.iter().all(|c| *c == 0) {
            return None;
        }
        // The checksum treats its own field as spaces.
        let stored = octal(b, 148, 8)?;
        let sum: u64 = b
            .iter()
            .take(512)
            .enumerate()
            .map(|(i, c)| if (148..156).contains(&i) { 32 } else { u64::from(*c) })
            .sum();
        if stored != sum {
            return None;
        }
        let name = String::from_utf8_lossy(field(b, 0, 100)).into_owned();
        let ustar = b.get(257..262) == Some(b"ustar");
        let prefix = if ustar {
            String::from_utf8_lossy(field(b, 345, 155)).into_owned()
        } else {
            String::new()
        };
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        Some(TarHeader {
            path,
            mode: octal(b, 100, 8)? as u32,
            size: octal(b, 124, 12)?,
            typeflag: b.get(156).copied().unwrap_or(b'0'),
            link: String::from_utf8_lossy(field(b, 157, 100)).into_owned(),
        })
    }

    /// Bytes of data (padded to 512) after the header.
    pub fn padded_size(&self) -> u64 {
        self.size.div_ceil(512) * 512
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        matches!(self.typeflag, b'0' | 0 | b'7')
    }
}

/// Tracks entry boundaries and file checksums over a stream fed in arbitrary pieces.
#[derive(Default)]
pub struct TarTracker {
    /// Bytes seen.
    pub pos: u64,
    next_header: u64,
    header: Vec<u8>,
    file: Option<(String, u64, u32, u64)>,
    ended: bool,
    /// The previous entry modifies the next one (GNU long name, pax): do not cut here.
    glued: bool,
    /// Regular files completed so far.
    pub files: Vec<FileEntry>,
    /// A malformed header was seen.
    pub error: Option<String>,
}

impl TarTracker {
    /// Whether the stream position is a place where a chunk may end (between two entries).
    pub fn at_boundary(&self) -> bool {
        (self.pos == self.next_header && self.header.is_empty() && !self.glued) || self.ended
    }

    /// Bytes until the next entry starts (`u64::MAX` after the end marker).
    pub fn to_next_boundary(&self) -> u64 {
        if self.ended { u64::MAX } else { self.next_header.saturating_sub(self.pos) }
    }

    /// Takes `data`, the next bytes of the stream, into account.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.ended {
                self.pos += data.len() as u64;
                return;
            }
            if self.pos >= self.next_header {
                // Inside a header.
                let want = 512 - self.header.len();
                let take = want.min(data.len());
                self.header.extend_from_slice(data.get(..take).unwrap_or_default());
                data = data.get(take..).unwrap_or_default();
                self.pos += take as u64;
                if self.header.len() == 512 {
                    match TarHeader::parse(&self.header) {
                        Some(h) => {
                            self.next_header = self.pos + h.padded_size();
                            self.glued = matches!(h.typeflag, b'L' | b'K' | b'x' | b'g');
                            if h.is_file() {
                                self.file = Some((h.path, h.size, 0, h.size));
                                self.finish_file_if_empty();
                            }
                        }
                        None if self.header.iter().all(|c| *c == 0) => self.ended = true,
                        None => {
                            self.error.get_or_insert_with(|| {
                                format!("malformed tar header at byte {}", self.pos - 512)
                            });
                            self.ended = true;
                        }
                    }
                    self.header.clear();
                }
                continue;
            }
            // Inside an entry's data.
            let left = (self.next_header - self.pos) as usize;
            let take = left.min(data.len());
            let chunk = data.get(..take).unwrap_or_default();
            if let Some((_, _, crc, remaining)) = self.file.as_mut() {
                let n = (*remaining).min(take as u64) as usize;
                *crc = crc32c::crc32c_append(*crc, chunk.get(..n).unwrap_or_default());
                *remaining -= n as u64;
            }
            self.finish_file_if_empty();
            data = data.get(take..).unwrap_or_default();
            self.pos += take as u64;
        }
    }

    fn finish_file_if_empty(&mut self) {
        if let Some((_, _, _, 0)) = self.file
            && let Some((path, size, crc, _)) = self.file.take()
        {
            self.files.push(FileEntry { path, size, crc32c: crc });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(path: &str, size: u64, flag: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        let s = format!("{size:011o}");
        h[124..135].copy_from_slice(s.as_bytes());
        h[156] = flag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|c| u64::from(*c)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    #[test]
    fn tracks_files_and_boundaries_in_any_pieces() {
        let mut tar = Vec::new();
        let mut bounds = vec![0u64];
        for (i, size) in [0u64, 1, 511, 512, 513, 70_000].iter().enumerate() {
            tar.extend(header(&format!("dir/f{i}"), *size, b'0'));
            let data: Vec<u8> = (0..*size).map(|x| (x * 31 + i as u64) as u8).collect();
            tar.extend(&data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
            bounds.push(tar.len() as u64);
        }
        tar.extend(header("dir", 0, b'5'));
        tar.extend(vec![0u8; 1024]);
        for piece in [1usize, 7, 512, 4096, 100_000] {
            let mut t = TarTracker::default();
            let mut seen_bounds = vec![];
            for p in tar.chunks(piece) {
                for b in p.chunks(1) {
                    if t.at_boundary() && !t.ended {
                        seen_bounds.push(t.pos);
                    }
                    t.feed(b);
                }
            }
            assert_eq!(t.files.len(), 6, "piece {piece}");
            assert_eq!(t.files[5].size, 70_000);
            let want: Vec<u8> = (0..70_000u64).map(|x| (x * 31 + 5) as u8).collect();
            assert_eq!(t.files[5].crc32c, crc32c::crc32c(&want));
            assert!(
                bounds.iter().all(|b| seen_bounds.contains(b)),
                "piece {piece}: {seen_bounds:?}"
            );
            assert!(t.error.is_none());
        }
    }

    #[test]
    fn bad_checksums_are_errors() {
        let mut h = header("x", 0, b'0');
        h[0] = b'y';
        let mut t = TarTracker::default();
        t.feed(&h);
        assert!(t.error.is_some());
    }
}
