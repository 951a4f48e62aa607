//! The only `unsafe` in uno-cache: mapping a segment file for reading.

use std::fs::File;
use std::io;

use memmap2::{Mmap, MmapOptions};

/// Maps the first `len` bytes of `file` read-only.
///
/// The caller passes `len <= file length` at the time of the call.
#[allow(unsafe_code)]
pub(crate) fn map_segment(file: &File, len: usize) -> io::Result<Mmap> {
    // SAFETY: a mapped file must not be truncated below, or have changed, bytes that a reference
    // into the map reads while it is alive. This holds because:
    // - the directory is locked (`LOCK`, flock) for the store's lifetime, so no other uno-cache
    //   process writes these files;
    // - uno-cache truncates a segment only down to its data end (when it is sealed, and when
    //   recovery cuts a torn or unused tail), and every read is bounded by the data end
    //   (`Segment::read`, `Segment::scan_data`), so no page past the end of the file is touched;
    //   deletion only unlinks, and a sealed segment's file is closed once the segment is
    //   durable: the mapping holds its own reference to the file, so neither invalidates it;
    // - `len` never exceeds the file length, nor the first hole of the file (the caller checks):
    //   new segments are fully allocated (`fallocate`) before they are mapped, so reading any
    //   byte never needs a new page, which a full tmpfs could not give (SIGBUS);
    // - segments are append-only: a byte range is read only after the writer has finished writing
    //   it and published its location through the data end and then the index (whose shard lock
    //   orders the write before the read), and bytes of a written record are never rewritten.
    //   Reads of a torn or damaged record are bounds-checked slices whose contents are CRC-checked
    //   before use.
    // A foreign process truncating the file could still raise SIGBUS; that is outside the contract
    // stated in storage-format.md ("do not modify the directory while a store has it open"). So
    // is a device that fails the read of a mapped page (EIO), which a map also gets as SIGBUS.
    unsafe { MmapOptions::new().len(len).map(file) }
}
