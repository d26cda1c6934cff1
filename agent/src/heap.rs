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

/// `text` as a shared body whose memory goes back to the system when its last reference goes,
/// wherever that is: the response that sent it, or the cache that kept it for concurrent
/// scrapes. A scrape's body is megabytes, and once glibc has freed one block that large it keeps
/// later ones in its heap (its mmap threshold grows to their size), where a free alone does not
/// return them: the RSS between scrapes was 15 MiB higher whenever the response outlived the
/// cache.
pub fn bytes_released_on_drop(text: String) -> axum::body::Bytes {
    axum::body::Bytes::from_owner(ReleasedOnDrop(text))
}

struct ReleasedOnDrop(String);

impl AsRef<[u8]> for ReleasedOnDrop {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
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
    #[test]
    fn a_released_body_reads_as_its_text_through_every_clone() {
        let body = super::bytes_released_on_drop("kernsight_up 1\n".repeat(1000));
        let clone = body.clone();
        drop(body);
        assert_eq!(clone.len(), 15_000);
        assert!(clone.starts_with(b"kernsight_up 1\nkernsight_up 1\n"));
        assert_eq!(clone.slice(15..29), "kernsight_up 1".as_bytes());
    }
}
