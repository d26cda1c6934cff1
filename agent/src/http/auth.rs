//! HTTP basic authentication against the bcrypt hashes of `basic_auth_users`.
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10): bcrypt's answer for a (user, password)
//! is remembered by the password's SHA-256 digest, so that a scraper pays it once, not on every
//! scrape; and hashes are checked one at a time on the blocking pool, so that a flood of wrong
//! passwords costs one core and queues behind itself instead of taking the threads scrapes need.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use base64::Engine as _;

/// A bcrypt hash of nothing anyone types, checked for unknown users so that a wrong user name
/// takes as long as a wrong password (no user enumeration by timing).
const DECOY_HASH: &str = "$2y$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z5ZL3vU5ySfu8Z0cKjYYm1Ze";

#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// What bcrypt answered for recent (user, password digest) pairs: every good one (one per
    /// user), and the last `REMEMBERED_FAILURES` bad ones, so that a scraper with a wrong
    /// password retrying every few seconds costs one hash, not one per scrape.
    verdicts: Mutex<Verdicts>,
    /// One bcrypt at a time.
    hashing: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Default)]
struct Verdicts {
    good: HashMap<String, ring::digest::Digest>,
    bad: VecDeque<(String, ring::digest::Digest)>,
}

const REMEMBERED_FAILURES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, a malformed header, an unknown user or a wrong password.
    Denied,
}

impl Verdicts {
    fn recall(&self, user: &str, digest: &ring::digest::Digest) -> Option<Verdict> {
        let same = |known: &ring::digest::Digest| known.as_ref() == digest.as_ref();
        if self.good.get(user).is_some_and(same) {
            return Some(Verdict::Allowed);
        }
        self.bad.iter().any(|(u, d)| u == user && same(d)).then_some(Verdict::Denied)
    }

    fn remember(&mut self, user: String, digest: ring::digest::Digest, verdict: Verdict) {
        match verdict {
            Verdict::Allowed => {
                self.good.insert(user, digest);
            }
            Verdict::Denied => {
                if self.bad.len() >= REMEMBERED_FAILURES {
                    self.bad.pop_front();
                }
                self.bad.push_back((user, digest));
            }
        }
    }
}

impl BasicAuth {
    /// `None` when no users are configured (no authentication).
    pub fn new(users: &BTreeMap<String, String>) -> Option<Arc<Self>> {
        (!users.is_empty()).then(|| {
            Arc::new(Self {
                users: users.clone(),
                verdicts: Mutex::default(),
                hashing: Arc::new(tokio::sync::Semaphore::new(1)),
            })
        })
    }

    /// Checks an `Authorization` header value.
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else { return Verdict::Denied };
        let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
        if let Some(verdict) = self.verdicts.lock().unwrap_or_else(|e| e.into_inner()).recall(&user, &digest)
        {
            return verdict;
        }
        let Ok(turn) = self.hashing.clone().acquire_owned().await else { return Verdict::Denied };
        let this = self.clone();
        // The hash runs to its end and is remembered even if the client gives up meanwhile:
        // its retry finds the answer instead of paying again.
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            if let Some(verdict) =
                this.verdicts.lock().unwrap_or_else(|e| e.into_inner()).recall(&user, &digest)
            {
                return verdict;
            }
            let hash = this.users.get(&user);
            let matches = bcrypt::verify(&password, hash.map_or(DECOY_HASH, String::as_str)).unwrap_or(false);
            let verdict = if matches && hash.is_some() { Verdict::Allowed } else { Verdict::Denied };
            this.verdicts.lock().unwrap_or_else(|e| e.into_inner()).remember(user, digest, verdict);
            verdict
        })
        .await
        .unwrap_or(Verdict::Denied)
    }
}

/// `Basic base64(user:password)` → (user, password).
fn credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[tokio::test]
    async fn checks_bcrypt_hashes_and_remembers_good_passwords() {
        // Cost 4: the lowest bcrypt allows, to keep the test fast.
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(&BTreeMap::from([("prometheus".to_owned(), hash)])).unwrap();
        assert_eq!(auth.check(None).await, Verdict::Denied);
        assert_eq!(auth.check(Some(b"Bearer x")).await, Verdict::Denied);
        assert_eq!(auth.check(Some(b"Basic !!!")).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&header("prometheus", "wrong"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&header("nobody", "s3cret"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&header("prometheus", "s3cret"))).await, Verdict::Allowed);
        assert!(auth.verdicts.lock().unwrap().good.contains_key("prometheus"));
        assert_eq!(auth.verdicts.lock().unwrap().bad.len(), 2, "wrong password and unknown user remembered");
        // Remembered: allowed again, and a wrong password is still wrong.
        assert_eq!(auth.check(Some(&header("prometheus", "s3cret"))).await, Verdict::Allowed);
        assert_eq!(auth.check(Some(&header("prometheus", "s3cret2"))).await, Verdict::Denied);
        assert!(DECOY_HASH.parse::<bcrypt::HashParts>().is_ok());
    }

    #[test]
    fn no_users_no_authentication() {
        assert!(BasicAuth::new(&BTreeMap::new()).is_none());
    }
}
