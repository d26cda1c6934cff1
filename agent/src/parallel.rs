//! Reading many small kernel files (a cgroup's, a process's) on a few threads at once. On a node
//! with 1,000 containers a scrape reads some 30,000 of them from cgroupfs and `/proc`, and the
//! kernel's work for each (path walk, formatting the file) is what a scrape waits for; it is
//! the same work spread over more CPUs.

use std::{num::NonZeroUsize, thread};

/// Most threads one read uses: the files are the kernel's, and an agent on a large node should
/// not take all of its CPUs while a scrape waits.
const MAX_THREADS: usize = 4;

/// Below this many items a single thread does it: starting threads costs more than it saves.
const MIN_ITEMS_PER_THREAD: usize = 64;

/// `f` of every item, in the items' order, computed on up to `MAX_THREADS` threads.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cpus = thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = cpus.min(MAX_THREADS).min(items.len() / MIN_ITEMS_PER_THREAD).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        // A worker that panicked panics here, as `f` would have on one thread.
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_mapped_once_in_order_whatever_the_count() {
        for n in [0, 1, 63, 64, 200, 1000, 1001] {
            let items: Vec<usize> = (0..n).collect();
            let doubled = map(&items, |i| i * 2);
            assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n} items");
        }
    }

    #[test]
    fn large_inputs_use_more_than_one_thread_where_there_are_cpus() {
        let items: Vec<usize> = (0..1000).collect();
        let mut threads: Vec<_> = map(&items, |_| thread::current().id());
        threads.dedup();
        let cpus = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(threads.len(), cpus.min(MAX_THREADS), "one run of ids per thread");
    }
}
