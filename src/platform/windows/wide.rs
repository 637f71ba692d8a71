//! UTF-16 strings for the Win32 API: NUL-terminated buffers in, lossy
//! UTF-8 out.

/// `s` as a NUL-terminated UTF-16 buffer.
pub fn to_wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The first `len` units of `buf`, decoded lossily.
pub fn from_wide(buf: &[u16], len: usize) -> String {
    String::from_utf16_lossy(&buf[..len.min(buf.len())])
}

/// A NUL-terminated UTF-16 string at `p`, decoded lossily.
///
/// # Safety
/// `p` must point to a NUL-terminated UTF-16 string that stays valid for
/// the call.
pub unsafe fn from_wide_ptr(p: *const u16) -> String {
    let mut len = 0;
    // SAFETY: the caller guarantees a terminating NUL within the string.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: the `len` units before the NUL are part of the string.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}
