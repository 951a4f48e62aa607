//! One segment file: a preallocated, append-only log of records, read through an mmap.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use super::format::{self, HINT_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN};
use super::mmap::map_segment;
use crate::error::{Error, Result};

/// File name of segment `id`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

/// File name of the hint file of segment `id`.
pub(crate) fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{HINT_EXT}"))
}

/// Parses `{id:020}.{ext}` back into an id.
pub(crate) fn parse_file_id(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// An open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) id: u64,
    /// Mixed into every record's CRC (see `format::SegmentHeader`).
    pub(crate) salt: u32,
    pub(crate) path: PathBuf,
    file: File,
    map: Mmap,
    /// Bytes of records the index points at (values only).
    pub(crate) live_bytes: AtomicU64,
    /// Offset just past the last record written; final once sealed.
    pub(crate) data_end: AtomicU64,
}

impl Segment {
    /// Creates segment `id`, preallocated to `size` bytes, with its header written.
    pub(crate) fn create(dir: &Path, id: u64, size: u64) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = super::dir::new_file_options(dir)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create segment", &path, e))?;
        let salt = format::new_salt(id);
        file.write_all_at(
            &format::encode_segment_header(format::SegmentHeader { id, salt }),
            0,
        )
        .map_err(|e| Error::io("write segment header", &path, e))?;
        file.set_len(size)
            .map_err(|e| Error::io("preallocate segment", &path, e))?;
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let map = map_segment(&file, len).map_err(|e| Error::io("mmap segment", &path, e))?;
        Ok(Segment {
            id,
            salt,
            path,
            file,
            map,
            live_bytes: AtomicU64::new(0),
            data_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
        })
    }

    /// Opens an existing segment read-only and checks its header.
    ///
    /// Returns `Ok(Err(reason))` if the header is damaged or names another id, and
    /// [`Error::UnsupportedVersion`] if a newer format version wrote it.
    pub(crate) fn open(path: PathBuf, id: u64) -> Result<std::result::Result<Segment, String>> {
        // Writable so recovery can zero a torn tail; the directory lock keeps other writers out.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat segment", &path, e))?
            .len();
        if len < SEGMENT_HEADER_LEN as u64 {
            return Ok(Err(format!("{len} bytes long, shorter than a segment header")));
        }
        let map = map_segment(&file, usize::try_from(len).unwrap_or(usize::MAX))
            .map_err(|e| Error::io("mmap segment", &path, e))?;
        let salt = match format::decode_segment_header(&map) {
            Ok(header) if header.id == id => header.salt,
            Ok(header) => return Ok(Err(format!("header names segment {}", header.id))),
            // A newer uno-cache wrote it: refuse the directory rather than delete its data.
            Err(format::HeaderError::Version(found)) => {
                return Err(Error::UnsupportedVersion {
                    path,
                    found,
                    supported: format::FORMAT_VERSION,
                })
            }
            Err(e) => return Ok(Err(format!("bad header: {e}"))),
        };
        Ok(Ok(Segment {
            id,
            salt,
            path,
            file,
            map,
            live_bytes: AtomicU64::new(0),
            data_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
        }))
    }

    /// Scans the records up to the data end (what a sealed or active segment holds).
    pub(crate) fn scan_data(&self) -> format::Scan<'_> {
        let end = usize::try_from(self.data_end()).unwrap_or(usize::MAX);
        format::scan_segment(self.map.get(..end).unwrap_or(&self.map), self.salt)
    }

    /// Scans the whole file, past any known data end (recovery without a hint).
    pub(crate) fn scan_file(&self) -> format::Scan<'_> {
        format::scan_segment(&self.map, self.salt)
    }

    /// Decodes the record at `offset`, if the bytes are inside the file.
    pub(crate) fn decode_at(&self, offset: u64, len: u32) -> Option<format::Decoded<'_>> {
        self.read(offset, len)
            .map(|bytes| format::decode_record(bytes, self.salt))
    }

    /// The bytes `offset..offset + len`, or `None` if they are outside the file.
    pub(crate) fn read(&self, offset: u64, len: u32) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        self.map.get(start..start.checked_add(len as usize)?)
    }

    /// Writes `bytes` at `offset` (not through the map, so a full disk is an error, not SIGBUS).
    pub(crate) fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| Error::io("write segment", &self.path, e))
    }

    /// Makes written data durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| Error::io("fsync segment", &self.path, e))
    }

    pub(crate) fn data_end(&self) -> u64 {
        self.data_end.load(Ordering::Acquire)
    }

    /// Length of the file as mapped.
    pub(crate) fn mapped_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes of records written (header excluded).
    pub(crate) fn data_bytes(&self) -> u64 {
        self.data_end().saturating_sub(SEGMENT_HEADER_LEN as u64)
    }
}
