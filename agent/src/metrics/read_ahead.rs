//! Reading the kernel's files ahead of the next scrape. A scrape of a node with 1,000 containers
//! reads some 20,000 files from cgroupfs and `/proc` that its 2 s caches no longer hold at
//! Prometheus' usual interval: more than half of its time. Scrapers come at a steady interval,
//! so the agent learns each one's and reads those files shortly before the next scrape is due,
//! into the same caches; the scrape then finds them there, as it would scrapes a moment apart.
//!
//! The files are read as often as before (once per scrape) and are as fresh when served (younger
//! than the caches' 2 s): what moves is when. A scraper that stops costs one read ahead at most;
//! one that comes at no steady interval (its last two intervals differ by more than a tenth) gets
//! none, and its scrapes read as before.

use std::{
    net::IpAddr,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// What can read, now, what a scrape at a given moment would otherwise read itself.
pub(super) trait ReadAhead: Send + Sync {
    fn read_ahead(&self, scrape_at: Instant);
}

/// Scrapes closer together than this find the caches warm from the one before.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A scraper slower than this is not read ahead for (and forgotten once twice as late).
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// Scrapers followed at once: an open port's clients are not all Prometheus, and a tenant that
/// can reach it must not grow this.
const MAX_SCRAPERS: usize = 16;
/// The earliest a read ahead starts before the scrape, and the latest: what it reads must still
/// serve then, and the caches' ttl is 2 s.
const MIN_LEAD: Duration = Duration::from_millis(200);
const MAX_LEAD: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy)]
struct Scraper {
    peer: IpAddr,
    last: Instant,
    interval: Option<Duration>,
    /// Whether its last two intervals agree: only then is its next scrape read ahead for (a
    /// read ahead for a scrape that does not come when due is a read in vain).
    steady: bool,
}

#[derive(Debug, Default)]
struct Schedule {
    scrapers: Vec<Scraper>,
    /// The scrape the last read ahead was for: read for once.
    read_for: Option<Instant>,
    /// How long the last read ahead took.
    took: Duration,
}

impl Schedule {
    fn scraped(&mut self, peer: IpAddr, at: Instant) {
        self.scrapers.retain(|s| at.saturating_duration_since(s.last) < 2 * MAX_INTERVAL);
        match self.scrapers.iter_mut().find(|s| s.peer == peer) {
            Some(scraper) => {
                let interval = at.saturating_duration_since(scraper.last);
                let interval = (MIN_INTERVAL..=MAX_INTERVAL).contains(&interval).then_some(interval);
                scraper.steady =
                    interval.zip(scraper.interval).is_some_and(|(new, last)| new.abs_diff(last) <= last / 10);
                scraper.interval = interval;
                scraper.last = at;
            }
            None => {
                if self.scrapers.len() == MAX_SCRAPERS {
                    let oldest = (0..self.scrapers.len()).min_by_key(|&i| self.scrapers[i].last);
                    self.scrapers.swap_remove(oldest.unwrap_or(0));
                }
                self.scrapers.push(Scraper { peer, last: at, interval: None, steady: false });
            }
        }
    }

    /// The next scrape due after `now` that has not been read for.
    fn next_due(&self, now: Instant) -> Option<Instant> {
        self.scrapers
            .iter()
            .filter(|s| s.steady)
            .filter_map(|s| Some(s.last + s.interval?))
            .filter(|&due| due > now && self.read_for.is_none_or(|read_for| due > read_for))
            .min()
    }

    /// How long before a scrape its read ahead starts: a little more than the last one took.
    fn lead(&self) -> Duration {
        (self.took + self.took / 4 + Duration::from_millis(100)).clamp(MIN_LEAD, MAX_LEAD)
    }
}

/// The scrapes seen, shared by the server (which records them) and the reader.
#[derive(Debug, Default)]
pub struct Scrapes {
    schedule: Mutex<Schedule>,
    changed: Condvar,
    /// Reads ahead made, and their time: scrape time moved off the scrape.
    pub reads: AtomicU64,
    pub nanos: AtomicU64,
    /// Reads ahead still reading when the scrape they were for was due: that scrape waited for
    /// them, or read some of the files itself.
    pub late: AtomicU64,
    stopping: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Scrapes {
    /// A scrape of `/metrics` by `peer` has begun.
    pub fn scraped(&self, peer: IpAddr, at: Instant) {
        self.lock().scraped(peer, at);
        self.changed.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the reading thread, after the read it is making: the readers it holds hold the
    /// loaded programs, whose links detach when the last holder lets go, and a process that
    /// exits first leaves its tc filters attached.
    pub fn stop(&self) {
        {
            // Under the schedule's lock, which the thread holds from its look at the flag until
            // it waits: it sees the flag, or is waiting and is woken.
            let _schedule = self.lock();
            self.stopping.store(true, Ordering::Relaxed);
        }
        self.changed.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Waits until the next read ahead is to start; returns the scrape it is for, or `None` once
    /// stopped.
    fn wait_for_next(&self) -> Option<Instant> {
        let mut schedule = self.lock();
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                return None;
            }
            let now = Instant::now();
            let wait = match schedule.next_due(now) {
                Some(due) if due.saturating_duration_since(now) <= schedule.lead() => {
                    schedule.read_for = Some(due);
                    return Some(due);
                }
                Some(due) => due.saturating_duration_since(now) - schedule.lead(),
                None => MAX_INTERVAL,
            };
            schedule = self.changed.wait_timeout(schedule, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Reads ahead of each scrape due, on a thread of its own (the reads block), until
/// `Scrapes::stop`.
pub(super) fn spawn(scrapes: Arc<Scrapes>, readers: Vec<Arc<dyn ReadAhead>>) {
    if readers.is_empty() {
        return;
    }
    let reading = scrapes.clone();
    let spawned = std::thread::Builder::new().name("read-ahead".into()).spawn(move || {
        let scrapes = reading;
        while let Some(due) = scrapes.wait_for_next() {
            let started = Instant::now();
            read_all(&readers, due);
            let took = started.elapsed();
            scrapes.lock().took = took;
            if started + took > due {
                scrapes.late.fetch_add(1, Ordering::Relaxed);
            }
            scrapes.reads.fetch_add(1, Ordering::Relaxed);
            scrapes.nanos.fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        }
    });
    match spawned {
        Ok(thread) => *scrapes.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread),
        Err(err) => {
            tracing::warn!("cannot start reading ahead of scrapes ({err}): every scrape reads its own files")
        }
    }
}

/// Reads ahead for the scrape due at `due`, then returns the memory the reads freed. A read
/// ahead parses thousands of files into short-lived strings on this thread and on those of
/// `parallel::map`, and what it keeps is spread among them: the free chunks left between
/// the kept ones stay resident in those threads' arenas until something trims them. The
/// scrape's own release comes only after its body is sent, so without this one they were held
/// through the wait for the scrape: 43.1-44.3 MiB between scrapes at 1,000 named containers,
/// against 38.2-40.5 with it (`docs/performance.md`).
fn read_all(readers: &[Arc<dyn ReadAhead>], due: Instant) {
    for reader in readers {
        reader.read_ahead(due);
    }
    crate::heap::release_free_memory();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::testing::{ran_alone, resident_bytes};

    fn peer(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn the_next_scrape_is_due_one_interval_after_the_last_of_each_scraper() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        schedule.scraped(peer(1), at(0));
        assert_eq!(schedule.next_due(at(1)), None, "one scrape is no interval");
        schedule.scraped(peer(1), at(15_000));
        assert_eq!(schedule.next_due(at(15_001)), None, "one interval is not yet a steady one");
        schedule.scraped(peer(1), at(30_100));
        assert_eq!(schedule.next_due(at(30_101)), Some(at(45_200)), "within a tenth: steady");
        // A second Prometheus of an HA pair, 5 s after the first, every 15 s too.
        for ms in [5_000, 20_000, 35_000] {
            schedule.scraped(peer(2), at(ms));
        }
        assert_eq!(schedule.next_due(at(35_001)), Some(at(45_200)));
        assert_eq!(schedule.next_due(at(45_201)), Some(at(50_000)), "peer 1 is late: not waited for");
        // Read for once.
        schedule.read_for = Some(at(45_200));
        assert_eq!(schedule.next_due(at(44_000)), Some(at(50_000)));
    }

    #[test]
    fn a_scraper_at_no_steady_interval_is_not_read_ahead_for() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        // 2.5 s, then 5 s, in turn: each due time would be wrong.
        for ms in [0, 2_500, 7_500, 10_000, 15_000, 17_500] {
            schedule.scraped(peer(1), t0 + Duration::from_millis(ms));
            assert_eq!(schedule.next_due(t0 + Duration::from_millis(ms + 1)), None);
        }
    }

    #[test]
    fn scrapes_too_close_or_too_far_apart_give_no_due_time() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        for ms in [0, 100, 200, 300] {
            schedule.scraped(peer(1), t0 + Duration::from_millis(ms));
        }
        assert_eq!(schedule.next_due(t0 + Duration::from_millis(301)), None, "back to back");
        let late = t0 + Duration::from_millis(300) + MAX_INTERVAL + Duration::from_secs(1);
        schedule.scraped(peer(1), late);
        assert_eq!(schedule.next_due(late), None, "slower than MAX_INTERVAL");
    }

    #[test]
    fn a_flood_of_scrapers_keeps_the_schedule_bounded() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        for n in 0..=255u8 {
            for round in 0..3u64 {
                schedule.scraped(peer(n), t0 + Duration::from_secs(round * 10 + u64::from(n)));
            }
        }
        assert_eq!(schedule.scrapers.len(), MAX_SCRAPERS);
        assert!(
            schedule.scrapers.iter().all(|s| s.peer >= peer(255 - MAX_SCRAPERS as u8 + 1)),
            "the latest kept"
        );
    }

    #[test]
    fn the_lead_follows_what_the_last_read_took_within_bounds() {
        let mut schedule = Schedule::default();
        assert_eq!(schedule.lead(), MIN_LEAD);
        schedule.took = Duration::from_millis(400);
        assert_eq!(schedule.lead(), Duration::from_millis(600));
        schedule.took = Duration::from_secs(10);
        assert_eq!(schedule.lead(), MAX_LEAD, "what is read must still serve at the scrape");
    }

    /// Reads for longer than the lead the schedule gives a first read.
    struct Slow;

    impl ReadAhead for Slow {
        fn read_ahead(&self, _: Instant) {
            std::thread::sleep(MIN_LEAD * 2);
        }
    }

    #[test]
    fn a_read_ahead_still_reading_when_its_scrape_is_due_is_counted_late() {
        let scrapes = Arc::new(Scrapes::default());
        spawn(scrapes.clone(), vec![Arc::new(Slow)]);
        for _ in 0..3 {
            scrapes.scraped(peer(1), Instant::now());
            std::thread::sleep(Duration::from_millis(1100));
        }
        // The read for the third interval's scrape began MIN_LEAD before it and lasts twice that.
        std::thread::sleep(MIN_LEAD * 2);
        assert_eq!(scrapes.reads.load(Ordering::Relaxed), 1);
        assert_eq!(scrapes.late.load(Ordering::Relaxed), 1);
        scrapes.stop();
    }

    /// Fills `FRAGMENTED` bytes of its thread's arena with blocks below the mmap threshold, keeps
    /// a small one after them (as a read ahead keeps what it read), and frees the rest: free
    /// memory that the allocator cannot give back by shrinking its heap's top.
    struct Fragmenting {
        kept: Mutex<Vec<Vec<u8>>>,
        resident_while_held: AtomicU64,
    }

    const FRAGMENTED: usize = 64 << 20;

    impl ReadAhead for Fragmenting {
        fn read_ahead(&self, _: Instant) {
            let blocks: Vec<Vec<u8>> = (0..FRAGMENTED / (16 << 10)).map(|_| vec![1u8; 16 << 10]).collect();
            self.kept.lock().unwrap().push(vec![1; 64]);
            self.resident_while_held.store(resident_bytes(), Ordering::Relaxed);
            drop(std::hint::black_box(blocks));
        }
    }

    #[test]
    fn what_a_read_ahead_freed_leaves_the_rss_before_the_scrape() {
        if ran_alone("metrics::read_ahead::tests::what_a_read_ahead_freed_leaves_the_rss_before_the_scrape") {
            return;
        }
        let reader =
            Arc::new(Fragmenting { kept: Mutex::new(Vec::new()), resident_while_held: AtomicU64::new(0) });
        let readers: Vec<Arc<dyn ReadAhead>> = vec![reader.clone()];
        // A thread of its own, as the read-ahead thread is: its own arena.
        let after = std::thread::spawn(move || {
            read_all(&readers, Instant::now());
            resident_bytes()
        })
        .join()
        .unwrap();
        let during = reader.resident_while_held.load(Ordering::Relaxed);
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        assert!(
            mib(during.saturating_sub(after)) >= 40.0,
            "the {} MiB freed are given back: {:.1} MiB resident while held, {:.1} after",
            FRAGMENTED >> 20,
            mib(during),
            mib(after)
        );
    }

    /// Counts its reads ahead and the scrape each was for.
    struct Counting(AtomicUsize, Mutex<Vec<Instant>>);

    impl ReadAhead for Counting {
        fn read_ahead(&self, scrape_at: Instant) {
            self.0.fetch_add(1, Ordering::Relaxed);
            self.1.lock().unwrap().push(scrape_at);
        }
    }

    #[test]
    fn a_scraper_at_a_steady_interval_is_read_ahead_for_once_per_scrape_just_before_it() {
        let scrapes = Arc::new(Scrapes::default());
        let counting = Arc::new(Counting(AtomicUsize::new(0), Mutex::new(Vec::new())));
        spawn(scrapes.clone(), vec![counting.clone()]);
        let mut last = Instant::now();
        scrapes.scraped(peer(1), last);
        let mut interval = Duration::ZERO;
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(1200));
            let now = Instant::now();
            (interval, last) = (now - last, now);
            scrapes.scraped(peer(1), now);
        }
        let due = last + interval;
        // Read from MIN_LEAD before the scrape due; then the scraper stops.
        std::thread::sleep(interval - MIN_LEAD / 2);
        assert_eq!(*counting.1.lock().unwrap(), [due], "read for the scrape due, before it");
        assert_eq!(scrapes.reads.load(Ordering::Relaxed), 1);
        assert_eq!(scrapes.late.load(Ordering::Relaxed), 0);
        std::thread::sleep(Duration::from_millis(2400));
        assert_eq!(counting.0.load(Ordering::Relaxed), 1, "not again for a scraper gone");
        // Stopped, the thread lets go of its readers.
        scrapes.stop();
        assert_eq!(Arc::strong_count(&counting), 1);
    }
}
