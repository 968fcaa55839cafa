//! Giving freed heap memory back to the kernel. glibc keeps what its arenas freed for reuse,
//! so a burst of streaming sessions (each holds zlib windows and buffers) would leave a
//! long-lived shim at its peak resident size. Once the last session of a burst has ended the
//! shim asks glibc to trim.

/// Returns free heap memory to the kernel (glibc's `malloc_trim`); a no-op elsewhere.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks glibc's own free lists; it takes no pointers from us and
    // is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
