//! berthd's memory in 4 KiB pages rather than transparent huge pages.
//!
//! mimalloc (berthd's allocator) asks the kernel for transparent huge pages
//! on its arenas (`madvise(MADV_HUGEPAGE)`), which takes effect even where
//! the system leaves THP to `madvise`, as Debian does. A fault in such a
//! region then zeroes a whole 2 MiB page for the few KiB mimalloc hands
//! out, and again after every purge returns part of one to the kernel. On
//! the leader that was 24% of its CPU samples under 256 writing clients
//! (`clear_page_erms` under `do_huge_pmd_anonymous_page`), and it kept
//! huge pages resident that were mostly unused: with 10,000 agents
//! connected, 734 MiB against 494 MiB in 4 KiB pages (docs/benchmarks.md).

/// Turns transparent huge pages off for this process (the flag would pass
/// to any process it started, across fork and exec; berthd starts none).
/// Call it before the runtime starts, so no thread faults a huge page in
/// first.
pub fn use_small_pages() -> std::io::Result<()> {
    rustix::thread::disable_transparent_huge_pages(true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_no_longer_takes_huge_pages() {
        super::use_small_pages().unwrap();
        assert!(rustix::thread::transparent_huge_pages_are_disabled().unwrap());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        // Newer kernels print the flag; older ones leave the line out.
        if let Some(line) = status.lines().find(|line| line.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
