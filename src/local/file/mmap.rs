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
    //   deletion only unlinks, which keeps the mapping valid;
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
    let map = unsafe { MmapOptions::new().len(len).map(file) }?;
    // Reads of a map are point lookups: a fault should read the page it needs. Left to the
    // default, the kernel reads around each fault as far as the device's readahead, 8 MiB on
    // some virtual disks: 20,000 random gets of a cold 230 MB store read 277 MB, and a store
    // in a 16 MiB memory cgroup was killed for memory with its pages all in flight. Advice
    // only; scans ask for their ranges ahead themselves (`Segment::read_ahead`).
    if let Err(e) = map.advise(memmap2::Advice::Random) {
        tracing::debug!(error = %e, "madvise(MADV_RANDOM) of a segment map failed; reads fault in around themselves");
    }
    Ok(map)
}
