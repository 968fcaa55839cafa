//! The shim's heap: one malloc arena, and freed memory given back to the kernel. glibc gives
//! each thread that allocates an arena of its own (up to eight per core), each keeping pages
//! it once used; a shim's threads (its runtime, the blocking pool, the log writer) are mostly
//! idle and rarely allocate at once, so one arena serves them all without contention that
//! matters, at a fraction of the resident memory. glibc also keeps
//! what its arenas freed for reuse, so a burst of streaming sessions (each holds zlib windows
//! and buffers) would leave a long-lived shim at its peak resident size: once the last
//! session of a burst has ended the shim asks glibc to trim.
//!
//! The same holds after any spell of work (CRI calls, a burst of log lines): `settle` waits
//! for the shim to be quiet for a moment after it, then trims the heap and gives back the pages
//! of the runtime thread's stack below the frames in use. A deep call (start-up, a large
//! answer's decoding) leaves those resident otherwise: two thirds of an idle shim's stack, and
//! a sixth of its heap, measured with `bench-pods`. Quiet means quiet: `settle` sleeps until
//! work comes, and wakes once after it.

use std::time::Duration;

use tokio::sync::Notify;

/// How long the shim must have had no work before it gives back what the work left.
const QUIET: Duration = Duration::from_secs(2);
/// Stack kept below the current frame (well past the 128-byte red zone a leaf function may
/// use unannounced). Pages below it that the next work reaches come back as zeroed page
/// faults, microseconds once per wake from quiet; 64 KiB kept 48 KiB more of every idle shim.
const STACK_MARGIN: usize = 16 * 1024;

/// Work was done: wakes `settle`, which waits for the quiet after it.
static ACTIVITY: Notify = Notify::const_new();

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

/// Marks work done now (a CRI call, a copied batch of log lines).
pub fn busy() {
    ACTIVITY.notify_one();
}

/// For the shim's life, on its runtime's thread: after each spell of work, once the shim has
/// been quiet for `QUIET`, trims the heap and gives back the unused part of this thread's stack.
pub async fn settle() {
    loop {
        ACTIVITY.notified().await;
        // Each further piece of work restarts the wait.
        while tokio::time::timeout(QUIET, ACTIVITY.notified())
            .await
            .is_ok()
        {}
        trim();
        release_stack();
    }
}

/// Gives the kernel back this thread's stack pages more than `STACK_MARGIN` below the current
/// frame: nothing lives there, and a page touched again is simply zero-filled anew.
#[inline(never)]
pub fn release_stack() {
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(low) = mapping_start(&maps, sp) else {
        return;
    };
    let page = page_size();
    let end = sp.saturating_sub(STACK_MARGIN) & !(page - 1);
    if end <= low {
        return;
    }
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: [low, end) lies inside this thread's own stack mapping, entirely below the
    // current frame and its margin: no live value is stored there (the stack grows down), so
    // dropping the pages loses nothing; the next touch maps a zeroed page.
    unsafe {
        libc::madvise(low as *mut libc::c_void, end - low, libc::MADV_DONTNEED);
    }
}

fn page_size() -> usize {
    #[allow(unsafe_code)]
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// The start of the mapping of `/proc/self/maps` (`maps`) that holds `address`.
fn mapping_start(maps: &str, address: usize) -> Option<usize> {
    maps.lines().find_map(|line| {
        let range = line.split_whitespace().next()?;
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start <= address && address < end).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mapping_that_holds_an_address() {
        let maps = "55d0c0a00000-55d0c0a21000 r--p 00000000 fd:01 123 /usr/bin/pod-shim\n\
                    7ffc3ee84000-7ffc3eed5000 rw-p 00000000 00:00 0                          [stack]\n\
                    garbage line\n";
        assert_eq!(mapping_start(maps, 0x7ffc3eec1aa0), Some(0x7ffc3ee84000));
        assert_eq!(mapping_start(maps, 0x7ffc3eed5000), None);
        assert_eq!(mapping_start("", 1), None);
        assert_eq!(mapping_start("zz-1 x\n", 0), None);
    }

    /// A deep call's pages are given back, and the thread goes on using its stack.
    #[test]
    fn the_stack_below_the_frames_in_use_is_given_back() {
        // Not inlined: its frame must lie below the caller's once it has returned.
        #[inline(never)]
        fn deep(n: usize) -> u8 {
            let buf = std::hint::black_box([n as u8; 256 * 1024]);
            buf[n % buf.len()]
        }
        // On a thread of known stack, so the figures are this thread's alone.
        let measured = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                std::hint::black_box(deep(7));
                let resident = || stack_resident_kib();
                let before = resident();
                release_stack();
                let after = resident();
                std::hint::black_box(deep(9));
                (before, after)
            })
            .expect("thread")
            .join()
            .expect("join");
        let (before, after) = measured;
        assert!(
            before >= 256 && after + 128 <= before,
            "stack resident {before} KiB before, {after} KiB after"
        );
    }

    /// Resident KiB of the mapping that holds this thread's stack: its entry in smaps, found
    /// by the start `mapping_start` reads from the maps.
    fn stack_resident_kib() -> usize {
        let here = 0u8;
        let sp = std::hint::black_box(&here) as *const u8 as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let start = mapping_start(&maps, sp).expect("the stack's mapping");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        smaps
            .split_once(&format!("{start:x}-"))
            .and_then(|(_, entry)| entry.lines().find_map(|l| l.strip_prefix("Rss:")))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("the stack's Rss in smaps")
    }
}
