//! When a value read from the kernel is read again: once it is older than a ttl, or, for what is
//! written once shortly after its object appears (a container's limits, which a runtime writes
//! after creating the cgroup; a process's namespaces, which it enters after joining the cgroup),
//! once it is older than the object had been known when it was read, up to the ttl. A value
//! read as its object appears is then read again at the next look, one known for a minute
//! serves the ttl.

use std::time::{Duration, Instant};

/// When a key was first read, and when its value last was.
#[derive(Debug, Clone, Copy)]
pub struct Reads {
    first: Instant,
    last: Instant,
}

impl Reads {
    /// A read at `now`, after the reads of `previous` if the key had any.
    pub fn after(previous: Option<Self>, now: Instant) -> Self {
        Self { first: previous.map_or(now, |reads| reads.first), last: now }
    }

    /// The first read of a key at `now`, whose object appeared at `appeared` where that is known
    /// (a cgroup created while the agent followed the kernel's events): it has been known since
    /// then, not only since this read.
    pub fn first(appeared: Option<Instant>, now: Instant) -> Self {
        Self { first: appeared.map_or(now, |appeared| appeared.min(now)), last: now }
    }

    /// When the value was last read.
    pub fn last(&self) -> Instant {
        self.last
    }

    /// Whether the value last read still serves at `now`: it is younger than `ttl` and, when
    /// `growing`, younger than the key had been known when it was read.
    pub fn serve(&self, now: Instant, ttl: Duration, growing: bool) -> bool {
        let known = self.last.saturating_duration_since(self.first);
        now.saturating_duration_since(self.last) < if growing { ttl.min(known) } else { ttl }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_read_serves_as_long_as_its_key_was_known_up_to_the_ttl() {
        let t0 = Instant::now();
        let at = |seconds| t0 + Duration::from_secs(seconds);
        let ttl = Duration::from_secs(30);
        let first = Reads::after(None, at(0));
        assert!(first.serve(at(29), ttl, false), "a plain ttl");
        assert!(!first.serve(at(30), ttl, false));
        assert!(!first.serve(at(1), ttl, true), "met just now: read again at the next look");
        let second = Reads::after(Some(first), at(10));
        assert!(
            second.serve(at(19), ttl, true) && !second.serve(at(20), ttl, true),
            "known 10 s: serves 10 s"
        );
        let appeared = Reads::first(Some(at(0)), at(2));
        assert!(
            appeared.serve(at(3), ttl, true) && !appeared.serve(at(4), ttl, true),
            "known 2 s: serves 2 s"
        );
        let late = Reads::after(Some(second), at(100));
        assert!(late.serve(at(129), ttl, true) && !late.serve(at(130), ttl, true), "up to the ttl");
        assert_eq!(late.last(), at(100));
    }
}
