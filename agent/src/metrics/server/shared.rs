//! One encode for concurrent scrapes. A scrape that arrives while a body is being encoded waits
//! for that body; one that arrives shortly after, while other scrapes are still being served,
//! gets the same body (for at most `metrics.encode_reuse_seconds`). A scrape alone always gets
//! a fresh body: N scrapers at once cost one pass over the kernel maps, one scraper sees every
//! count it caused.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::body::Bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

pub struct SharedEncode {
    inner: Arc<Inner>,
}

struct Inner {
    /// The last body of each format; the lock is held while encoding, so waiters queue on it.
    bodies: [tokio::sync::Mutex<Option<Encoded>>; 2],
    /// Scrapes between their arrival and the end of their response.
    in_flight: AtomicUsize,
    reuse: Duration,
}

struct Encoded {
    finished: Instant,
    body: Bytes,
}

/// One scrape, counted in flight until dropped (after its body is written).
pub struct Scrape {
    inner: Arc<Inner>,
    arrived: Instant,
}

impl SharedEncode {
    pub fn new(reuse: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                bodies: [tokio::sync::Mutex::new(None), tokio::sync::Mutex::new(None)],
                in_flight: AtomicUsize::new(0),
                reuse,
            }),
        }
    }

    pub fn begin(&self) -> Scrape {
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        Scrape { inner: self.inner.clone(), arrived: Instant::now() }
    }
}

impl Scrape {
    /// The body in `format`, and whether it was encoded for another scrape. `encode` runs on the
    /// blocking pool; `None` if it failed.
    pub async fn body(
        &self,
        format: Format,
        encode: impl FnOnce() -> Option<Bytes> + Send + 'static,
    ) -> Option<(Bytes, bool)> {
        let mut last = self.inner.bodies[format as usize].lock().await;
        if let Some(encoded) = &*last {
            // Finished while this scrape waited: it was encoded concurrently with it.
            let concurrent = encoded.finished >= self.arrived;
            let overlapping = self.inner.in_flight.load(Ordering::Acquire) > 1
                && encoded.finished.elapsed() <= self.inner.reuse;
            if concurrent || overlapping {
                return Some((encoded.body.clone(), true));
            }
        }
        let body = tokio::task::spawn_blocking(encode).await.ok()??;
        *last = Some(Encoded { finished: Instant::now(), body: body.clone() });
        Some((body, false))
    }
}

impl Drop for Scrape {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn counting_encoder(count: &Arc<AtomicU64>) -> impl FnOnce() -> Option<Bytes> + Send + 'static {
        let count = count.clone();
        move || {
            std::thread::sleep(Duration::from_millis(30));
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            Some(Bytes::from(format!("encode {n}")))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_encode() {
        let shared = Arc::new(SharedEncode::new(Duration::from_secs(1)));
        let count = Arc::new(AtomicU64::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (shared, count, barrier) = (shared.clone(), count.clone(), barrier.clone());
                tokio::spawn(async move {
                    let scrape = shared.begin();
                    barrier.wait().await;
                    let body = scrape.body(Format::Text, counting_encoder(&count)).await;
                    // Hold the response a moment, as writing it would.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    body
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "50 concurrent scrapes, one encode");
    }

    #[tokio::test]
    async fn a_lone_scrape_always_gets_a_fresh_body() {
        let shared = SharedEncode::new(Duration::from_secs(60));
        let count = Arc::new(AtomicU64::new(0));
        for n in 1..=3 {
            let scrape = shared.begin();
            let (body, reused) = scrape.body(Format::Text, counting_encoder(&count)).await.unwrap();
            assert!(!reused);
            assert_eq!(body, Bytes::from(format!("encode {n}")));
        }
        // Formats do not share bodies.
        let scrape = shared.begin();
        let (_, reused) = scrape.body(Format::OpenMetrics, counting_encoder(&count)).await.unwrap();
        assert!(!reused);
    }

    #[tokio::test]
    async fn an_overlapping_scrape_reuses_a_recent_body_until_it_is_too_old() {
        let shared = SharedEncode::new(Duration::from_millis(200));
        let count = Arc::new(AtomicU64::new(0));
        let first = shared.begin();
        first.body(Format::Text, counting_encoder(&count)).await.unwrap();
        // `first` is still being written: a second scrape overlaps it.
        let second = shared.begin();
        assert!(second.body(Format::Text, counting_encoder(&count)).await.unwrap().1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let third = shared.begin();
        assert!(
            !third.body(Format::Text, counting_encoder(&count)).await.unwrap().1,
            "older than the reuse window"
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
