//! What one connection may hold, and for how long: a bounded table of connections that evicts
//! idle or unfinished ones before it refuses a newcomer, and a socket wrapper that gives up on a
//! response the client does not read.

use std::{
    collections::BTreeMap,
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Sleep,
};

/// The limits of the HTTP face (`[metrics]` keys of the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// From accept (or the end of the previous response) to a complete request head, TLS
    /// handshake included: slow or partial headers, and idle kept-alive connections, end here.
    pub header_timeout: Duration,
    /// A response write that makes no progress for this long ends the connection.
    pub write_timeout: Duration,
    /// The request head, request line included; past it the answer is 431.
    pub max_header_bytes: usize,
    /// How long an encoded /metrics body may be handed to scrapes that overlap others.
    pub encode_reuse: Duration,
}

/// The connections open, oldest first, with whether each is serving a request.
#[derive(Debug)]
pub struct Table {
    max: usize,
    open: Mutex<(u64, BTreeMap<u64, Arc<SlotState>>)>,
}

#[derive(Debug, Default)]
pub struct SlotState {
    /// Between a complete request head and the handler's response.
    pub busy: AtomicBool,
    evicted: Notify,
}

/// A connection's place in the table, freed when dropped.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    table: Arc<Table>,
    pub state: Arc<SlotState>,
}

pub enum Admission {
    Admitted(Slot),
    /// Admitted after closing the oldest connection that was not serving a request.
    Evicted(Slot),
    /// Every connection is serving a request.
    Refused,
}

impl Table {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max: max.max(1), open: Mutex::default() })
    }

    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    /// A slot for a new connection. At the bound, the oldest connection that is not serving a
    /// request (a slow or partial header, a TLS handshake, an idle keep-alive, a stalled
    /// write) makes room: an attacker's connections cannot keep a scraper out, only share the
    /// table with it.
    pub fn admit(self: &Arc<Self>) -> Admission {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        let mut evicted = false;
        if open.len() >= self.max {
            let victim = open.iter().find(|(_, s)| !s.busy.load(Ordering::Relaxed)).map(|(id, _)| *id);
            let Some(victim) = victim else { return Admission::Refused };
            if let Some(state) = open.remove(&victim) {
                // notify_one keeps the permit if the connection is not waiting right now.
                state.evicted.notify_one();
            }
            evicted = true;
        }
        let id = *next;
        *next += 1;
        let state = Arc::new(SlotState::default());
        open.insert(id, state.clone());
        let slot = Slot { id, table: self.clone(), state };
        if evicted { Admission::Evicted(slot) } else { Admission::Admitted(slot) }
    }
}

impl Slot {
    /// Resolves when the table closed this connection to make room for another.
    pub async fn evicted(&self) {
        self.state.evicted.notified().await;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.open.lock().unwrap_or_else(|e| e.into_inner()).1.remove(&self.id);
    }
}

/// What a connection's socket saw, to name the timeout that ended it.
#[derive(Debug, Default)]
pub struct Activity {
    /// Bytes arrived since the last response bytes left: a request is on its way.
    pub reading_request: AtomicBool,
    pub write_timed_out: AtomicBool,
    pub requests: AtomicU64,
}

/// A socket whose writes give up after `write_timeout` without progress: a client that never
/// reads its response cannot hold the connection (and its response) forever.
pub struct Guarded<S> {
    inner: S,
    write_timeout: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
    pub activity: Arc<Activity>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, write_timeout: Duration, activity: Arc<Activity>) -> Self {
        Self { inner, write_timeout, stalled_since: None, activity }
    }

    /// Called when a write is pending: an error once it has been pending too long.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.write_timeout;
        let sleep = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        self.activity.write_timed_out.store(true, Ordering::Relaxed);
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "the client did not read its response"))
    }

    fn wrote<T>(&mut self, result: io::Result<T>) -> Poll<io::Result<T>> {
        self.stalled_since = None;
        self.activity.reading_request.store(false, Ordering::Relaxed);
        Poll::Ready(result)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.activity.reading_request.store(true, Ordering::Relaxed);
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => self.wrote(result),
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => self.wrote(result),
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                self.stalled_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(result) => {
                self.stalled_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_table_evicts_the_oldest_idle_connection_and_refuses_when_all_are_busy() {
        let table = Table::new(2);
        let Admission::Admitted(first) = table.admit() else { panic!("room for the first") };
        let Admission::Admitted(second) = table.admit() else { panic!("room for the second") };
        second.state.busy.store(true, Ordering::Relaxed);
        let Admission::Evicted(third) = table.admit() else { panic!("the idle first makes room") };
        assert_eq!(table.open(), 2);
        // The evicted connection learns it (the permit waits for it).
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), first.evicted()).await.expect("eviction notified")
        });
        drop(first);
        assert_eq!(table.open(), 2, "dropping an evicted slot frees nothing twice");
        third.state.busy.store(true, Ordering::Relaxed);
        assert!(matches!(table.admit(), Admission::Refused));
        drop(second);
        assert!(matches!(table.admit(), Admission::Admitted(_)));
    }
}
