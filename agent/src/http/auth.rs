//! HTTP basic authentication against the bcrypt hashes of `basic_auth_users`.
//!
//! bcrypt is slow on purpose (about 70 ms at cost 10): a password that verified once is
//! remembered by its SHA-256 digest, so that a scraper pays it once, not on every scrape; and
//! hashes are checked one at a time on the blocking pool, so that a flood of wrong passwords
//! costs one core and queues behind itself instead of taking the threads scrapes need.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use base64::Engine as _;

/// A bcrypt hash of nothing anyone types, checked for unknown users so that a wrong user name
/// takes as long as a wrong password (no user enumeration by timing).
const DECOY_HASH: &str = "$2y$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z5ZL3vU5ySfu8Z0cKjYYm1Ze";

#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// User → digest of the password that last verified.
    verified: Mutex<HashMap<String, ring::digest::Digest>>,
    /// One bcrypt at a time.
    hashing: tokio::sync::Semaphore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, a malformed header, an unknown user or a wrong password.
    Denied,
}

impl BasicAuth {
    /// `None` when no users are configured (no authentication).
    pub fn new(users: &BTreeMap<String, String>) -> Option<Arc<Self>> {
        (!users.is_empty()).then(|| {
            Arc::new(Self {
                users: users.clone(),
                verified: Mutex::default(),
                hashing: tokio::sync::Semaphore::new(1),
            })
        })
    }

    /// Checks an `Authorization` header value.
    pub async fn check(self: &Arc<Self>, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(credentials) else { return Verdict::Denied };
        let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&user)
            .is_some_and(|known| known.as_ref() == digest.as_ref());
        if remembered && self.users.contains_key(&user) {
            return Verdict::Allowed;
        }
        let Ok(_turn) = self.hashing.acquire().await else { return Verdict::Denied };
        let this = self.clone();
        let hash = self.users.get(&user).cloned();
        let verified = tokio::task::spawn_blocking(move || {
            let ok = bcrypt::verify(&password, hash.as_deref().unwrap_or(DECOY_HASH)).unwrap_or(false);
            ok && hash.is_some()
        })
        .await
        .unwrap_or(false);
        if !verified {
            return Verdict::Denied;
        }
        this.verified.lock().unwrap_or_else(|e| e.into_inner()).insert(user, digest);
        Verdict::Allowed
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
        assert!(auth.verified.lock().unwrap().contains_key("prometheus"));
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
