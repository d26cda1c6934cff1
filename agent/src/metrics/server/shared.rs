//! One encode for concurrent scrapes. A scrape gets the last body instead of a new one when that
//! body was encoded while the scrape waited for it, or when its encode began after the scrape's
//! connection was ready for this request (opened, or done with its previous response) and ended
//! less than `metrics.encode_reuse_milliseconds` ago. Scrapes that overlap share one pass over
//! the kernel maps; a client that scrapes again after reading its answer always gets fresh
//! counts, because its connection became ready after the last encode began.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::metrics::exposition::Format;

/// The last bodies `B` of the formats, shared by the scrapes that may reuse them.
pub struct SharedEncode<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    /// The last body of each format; the lock is held while encoding, so waiters queue on it.
    bodies: [tokio::sync::Mutex<Option<Encoded<B>>>; 2],
    reuse: Duration,
}

struct Encoded<B> {
    started: Instant,
    finished: Instant,
    body: B,
}

/// One scrape: when it arrived, and since when its connection was ready for it.
pub struct Scrape<B> {
    inner: Arc<Inner<B>>,
    arrived: Instant,
    ready_since: Instant,
}

impl<B: Clone + Send + 'static> SharedEncode<B> {
    pub fn new(reuse: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                bodies: [tokio::sync::Mutex::new(None), tokio::sync::Mutex::new(None)],
                reuse,
            }),
        }
    }

    /// A scrape on a connection ready for it since `ready_since` (its accept, or the end of its
    /// previous response).
    pub fn begin(&self, ready_since: Instant) -> Scrape<B> {
        let arrived = Instant::now();
        Scrape { inner: self.inner.clone(), arrived, ready_since: ready_since.min(arrived) }
    }
}

impl<B: Clone + Send + 'static> Scrape<B> {
    /// The body in `format`, and whether it was encoded for another scrape. `encode` runs on the
    /// blocking pool; `None` if it failed.
    pub async fn body(
        &self,
        format: Format,
        encode: impl FnOnce() -> Option<B> + Send + 'static,
    ) -> Option<(B, bool)> {
        let mut last = self.inner.bodies[format as usize].lock().await;
        if let Some(encoded) = &*last {
            // Encoded while this scrape waited for the lock.
            let joined = encoded.finished >= self.arrived;
            // Begun while this connection was already waiting for an answer: a concurrent
            // scrape's, recent enough.
            let concurrent =
                encoded.started >= self.ready_since && encoded.finished.elapsed() <= self.inner.reuse;
            if joined || concurrent {
                return Some((encoded.body.clone(), true));
            }
        }
        let started = Instant::now();
        let body = tokio::task::spawn_blocking(encode).await.ok()??;
        *last = Some(Encoded { started, finished: Instant::now(), body: body.clone() });
        // Past the reuse window no new scrape can have this body: let it go rather than hold a
        // body of megabytes until the next scrape (its memory goes back to the system with its
        // last reference: `heap::pieces_released_on_drop`). Scrapes already waiting for the lock
        // queued before this task does, and get it first.
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(inner.reuse).await;
            let mut last = inner.bodies[format as usize].lock().await;
            if last.as_ref().is_some_and(|encoded| encoded.started == started) {
                *last = None;
            }
        });
        Some((body, false))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::body::Bytes;

    use super::*;

    fn counting_encoder(count: &Arc<AtomicU64>) -> impl FnOnce() -> Option<Bytes> + Send + 'static {
        let count = count.clone();
        move || {
            std::thread::sleep(Duration::from_millis(10));
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            Some(Bytes::from(format!("encode {n}")))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_on_connections_opened_together_share_one_encode() {
        let shared = Arc::new(SharedEncode::new(Duration::from_secs(1)));
        let count = Arc::new(AtomicU64::new(0));
        let opened = Instant::now();
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (shared, count) = (shared.clone(), count.clone());
                tokio::spawn(async move {
                    // Requests trickle in, as a busy server reads them.
                    tokio::time::sleep(Duration::from_millis(i * 2)).await;
                    shared.begin(opened).body(Format::Text, counting_encoder(&count)).await
                })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_some());
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "50 scrapes of connections opened together, one encode");
    }

    #[tokio::test]
    async fn a_client_scraping_again_gets_a_fresh_body() {
        let shared = SharedEncode::new(Duration::from_secs(60));
        let count = Arc::new(AtomicU64::new(0));
        let mut ready = Instant::now();
        for n in 1..=3 {
            let (body, reused) =
                shared.begin(ready).body(Format::Text, counting_encoder(&count)).await.unwrap();
            assert!(!reused);
            assert_eq!(body, Bytes::from(format!("encode {n}")));
            // The same connection after its response, or a new one: ready after that encode.
            ready = Instant::now();
        }
        // Formats do not share bodies.
        let (_, reused) =
            shared.begin(Instant::now()).body(Format::OpenMetrics, counting_encoder(&count)).await.unwrap();
        assert!(!reused);
    }

    #[tokio::test]
    async fn a_waiting_connection_reuses_a_recent_body_until_it_is_too_old() {
        let shared = SharedEncode::new(Duration::from_millis(200));
        let count = Arc::new(AtomicU64::new(0));
        let waiting_since = Instant::now();
        shared.begin(Instant::now()).body(Format::Text, counting_encoder(&count)).await.unwrap();
        // A connection that was open before that encode began: a concurrent scraper.
        assert!(shared.begin(waiting_since).body(Format::Text, counting_encoder(&count)).await.unwrap().1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, reused) =
            shared.begin(waiting_since).body(Format::Text, counting_encoder(&count)).await.unwrap();
        assert!(!reused, "older than the reuse window");
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_is_let_go_once_no_scrape_can_reuse_it() {
        let shared = SharedEncode::new(Duration::from_millis(100));
        let count = Arc::new(AtomicU64::new(0));
        shared.begin(Instant::now()).body(Format::Text, counting_encoder(&count)).await.unwrap();
        assert!(shared.inner.bodies[Format::Text as usize].lock().await.is_some(), "kept for the window");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(shared.inner.bodies[Format::Text as usize].lock().await.is_none(), "dropped after it");
    }
}
