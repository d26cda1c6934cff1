//! Giving freed memory back to the system after a burst of frees (the kernel's BTF parsed at
//! start-up, thousands of forgotten cgroups): glibc keeps freed pages in its free lists and
//! per-thread arenas otherwise, and the agent's RSS would stay at its peak.

/// Returns the allocator's free pages to the system. musl's allocator (the container image)
/// unmaps freed memory by itself and has no `malloc_trim`.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}
