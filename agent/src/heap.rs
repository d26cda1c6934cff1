//! The allocator, and giving freed memory back to the system after a burst of frees (the
//! kernel's BTF parsed at start-up, thousands of forgotten cgroups, a scrape's body): glibc and
//! jemalloc keep freed pages in their free lists and per-thread arenas otherwise, and the
//! agent's RSS would stay at its peak.

use std::sync::Arc;

/// The image's (static, musl) allocator: musl's own has no per-thread caches, and with it a
/// scrape at 1,000 containers took twice the CPU of the glibc build. The arm64 smoke build keeps
/// musl's (agent/Cargo.toml).
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start: freed pages go back to the system a second after the
/// last use (ten by default), in one step (`MADV_DONTNEED`, where the default's second step,
/// `MADV_FREE`, leaves them counted in the RSS until the kernel needs them).
#[cfg(all(target_env = "musl", target_arch = "x86_64"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_OPTIONS: Option<&u8> = Some(&b"narenas:4,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0]);

/// Blocks of at least this size get a mapping of their own, returned to the system when freed.
#[cfg(target_env = "gnu")]
const MAPPED_FROM_BYTES: libc::c_int = 1 << 20;

/// Makes every large block (a scrape's 16 MB body, a collector's big vectors) a mapping of its
/// own, wherever it is freed. glibc's default raises its mmap threshold to the size of the
/// largest mapped block freed (up to 32 MB), after which bodies are carved from the heap of
/// the arena of the thread that encodes them; when freed they merge into that heap's top, which
/// `malloc_trim` does not shrink for a thread's arena, and which the trim threshold (raised
/// alongside, to twice the mmap threshold) keeps. One such body in each of two threads' arenas
/// was 32 MiB of the 61 MiB RSS between scrapes at 1,000 containers (the mappings of
/// `/proc/PID/smaps`). A fixed threshold also fixes the trim threshold at its 128 KiB default.
/// Call before the runtime starts its threads.
pub fn map_large_blocks() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM_BYTES);
    }
}

/// Returns the allocator's free pages to the system (musl's own allocator, in the arm64 build,
/// unmaps freed memory by itself).
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(all(target_env = "musl", target_arch = "x86_64"))]
    // SAFETY: a documented control of jemalloc's, with no value read or written; it purges
    // the unused pages of every arena (4096 is MALLCTL_ARENAS_ALL).
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
}

/// `texts` as the pieces of one shared body, whose memory goes back to the system when the
/// last reference to any piece goes, wherever that is: the response that sent it, or the cache
/// that kept it for concurrent scrapes. A scrape's body is megabytes, and once glibc has freed
/// one block that large it keeps later ones in its heap (its mmap threshold grows to their
/// size), where a free alone does not return them: the RSS between scrapes was 15 MiB higher
/// whenever the response outlived the cache. The pieces share one owner, so the free memory is
/// returned once for the body, not once a piece.
pub fn pieces_released_on_drop(texts: Vec<String>) -> Vec<axum::body::Bytes> {
    let all = Arc::new(ReleasedOnDrop(texts));
    (0..all.0.len()).map(|index| axum::body::Bytes::from_owner(Piece { all: all.clone(), index })).collect()
}

struct ReleasedOnDrop(Vec<String>);

struct Piece {
    all: Arc<ReleasedOnDrop>,
    index: usize,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        self.all.0[self.index].as_bytes()
    }
}

impl Drop for ReleasedOnDrop {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.0));
        release_free_memory();
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{ran_alone, resident_bytes};

    #[test]
    fn a_large_block_freed_on_another_thread_leaves_the_rss_at_once() {
        if ran_alone("heap::tests::a_large_block_freed_on_another_thread_leaves_the_rss_at_once") {
            return;
        }
        super::map_large_blocks();
        const BODY: usize = 16 << 20;
        // A thread of its own, as a scrape's encode runs on: its allocations come from its arena.
        let (before, during, after) = std::thread::spawn(|| {
            // A mapped block freed first: what raises glibc's default threshold.
            drop(vec![1u8; BODY]);
            let before = resident_bytes();
            let body = vec![1u8; BODY];
            let during = resident_bytes();
            drop(std::hint::black_box(body));
            (before, during, resident_bytes())
        })
        .join()
        .unwrap();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let (before, during, after) = (mib(before), mib(during), mib(after));
        assert!(during - before >= 15.0, "the block is resident while held: {before:.1} → {during:.1} MiB");
        assert!(during - after >= 15.0, "and gone once freed: {during:.1} → {after:.1} MiB");
    }

    #[test]
    fn released_pieces_read_as_their_texts_through_every_clone() {
        let pieces = super::pieces_released_on_drop(vec!["kernsight_up 1\n".repeat(1000), "# EOF\n".into()]);
        let clone = pieces[0].clone();
        let eof = pieces[1].clone();
        drop(pieces);
        assert_eq!(clone.len(), 15_000);
        assert!(clone.starts_with(b"kernsight_up 1\nkernsight_up 1\n"));
        assert_eq!(clone.slice(15..29), "kernsight_up 1".as_bytes());
        drop(clone);
        assert_eq!(eof, "# EOF\n".as_bytes(), "a piece outlives its siblings");
    }
}
