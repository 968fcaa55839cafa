//! The shim's heap: one malloc arena, and freed memory given back to the kernel. glibc gives
//! each thread that allocates an arena of its own (up to eight per core), each keeping pages
//! it once used; a shim's threads (its runtime, the blocking pool, the hand-over acceptor, the
//! log writer) are mostly idle and rarely allocate at once, so one arena serves them all
//! without contention that matters, at a fraction of the resident memory. glibc also keeps
//! what its arenas freed for reuse, so a burst of streaming sessions (each holds zlib windows
//! and buffers) would leave a long-lived shim at its peak resident size: once the last
//! session of a burst has ended the shim asks glibc to trim.

/// Makes every thread allocate from glibc's main arena; before the shim starts any thread.
pub fn single_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets a glibc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // Fixed thresholds: glibc's dynamic ones grow after the first large buffer is freed
        // (a Docker answer of a few hundred KiB), and from then on keep that much heap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

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
