//! Little-endian field access for the on-disk formats, bounds-checked without panicking.
//!
//! Reads out of range yield zero and writes out of range do nothing: callers check lengths first,
//! and these only keep a damaged file from ever becoming a panic.

pub(crate) fn put(buf: &mut [u8], at: usize, src: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + src.len()) {
        dst.copy_from_slice(src);
    }
}

pub(crate) fn bytes<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at + N).and_then(|s| s.try_into().ok())
}

pub(crate) fn u16_at(buf: &[u8], at: usize) -> u16 {
    bytes::<2>(buf, at).map_or(0, u16::from_le_bytes)
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    bytes::<4>(buf, at).map_or(0, u32::from_le_bytes)
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    bytes::<8>(buf, at).map_or(0, u64::from_le_bytes)
}
