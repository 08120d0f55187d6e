//! Keeps a long-lived, mostly idle process small. A shim lives beside every container, mostly
//! asleep, and berthd waits for requests most of its life; what they touched while busy (the
//! parsers, container set-up, most of their code) is not needed again until the next request.
//! After a burst of activity and a quiet period, the process returns its free heap to the kernel
//! (`malloc_trim`) and drops its mappings of code and constants (`MADV_DONTNEED` on the
//! read-only file mappings that hold no copied page: they are never written, so they come back
//! unchanged from the page cache — shared by every process of the same binary — when next used,
//! at the cost of a minor fault per 64 KiB). Its resident set is then the working set of waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Marks activity; trims once `quiet` passed without any.
#[derive(Clone, Default)]
pub struct Trimmer {
    activity: Arc<Notify>,
}

impl Trimmer {
    /// Starts the watching task on the current tokio runtime.
    pub fn start(quiet: Duration) -> Trimmer {
        let t = Trimmer::default();
        let activity = Arc::clone(&t.activity);
        tokio::spawn(async move {
            loop {
                activity.notified().await;
                while tokio::time::timeout(quiet, activity.notified())
                    .await
                    .is_ok()
                {}
                trim();
            }
        });
        t
    }

    pub fn touch(&self) {
        self.activity.notify_one();
    }
}

/// Caps glibc's malloc arenas at one per CPU the process may run on. glibc gives each new
/// thread that finds the arenas busy a fresh one, up to 8 per CPU; a daemon whose blocking pool
/// has run a burst of short jobs (metadata commits, file work) then keeps the free memory of
/// every arena those threads touched, which `malloc_trim` returns only partly. With one arena
/// per CPU, threads share, contention stays as low as the CPUs allow, and the resident set
/// after a burst is measurably smaller (docs/benchmarks.md). Call it before any thread starts.
pub fn limit_malloc_arenas() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = libc::c_int::try_from(cpus).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes glibc's allocator tunables; M_ARENA_MAX takes a count.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

pub fn trim() {
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole read-only file mapping of this process holding no
        // anonymous (copied-on-write) page: every resident page is a clean copy of the file
        // and faults back in from it unchanged.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The read-only private file mappings (code, constants, unwinding tables) in `smaps` that hold
/// no anonymous page. A read-only mapping with anonymous pages — RELRO data the loader relocated
/// before making it read-only — is left alone: dropping those pages would lose the relocations.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut anonymous = 0u64;
    let mut flush = |current: &mut Option<(usize, usize)>, anonymous: u64| {
        if let Some(range) = current.take() {
            if anonymous == 0 {
                out.push(range);
            }
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                flush(&mut current, anonymous);
                anonymous = 0;
                let perms = f.next().unwrap_or("");
                let path = f.nth(3).unwrap_or("");
                if (perms == "r-xp" || perms == "r--p") && path.starts_with('/') {
                    current = Some((start, end));
                }
                continue;
            }
        }
        if first == "Anonymous:" {
            anonymous = f.next().and_then(|v| v.parse().ok()).unwrap_or(1);
        }
    }
    flush(&mut current, anonymous);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let smaps = "\
5555000-5556000 r--p 00000000 08:01 1 /usr/bin/shim
Rss:                   4 kB
Anonymous:             0 kB
5556000-5560000 r-xp 00001000 08:01 1 /usr/bin/shim
Anonymous:             0 kB
5560000-5561000 r--p 00010000 08:01 1 /usr/bin/shim
Anonymous:             4 kB
5561000-5562000 rw-p 00011000 08:01 1 /usr/bin/shim
Anonymous:             4 kB
7000000-7001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7002000-7003000 rw-p 00000000 00:00 0 [heap]
Anonymous:             4 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![(0x5555000, 0x5556000), (0x5556000, 0x5560000)]
        );
    }
}
