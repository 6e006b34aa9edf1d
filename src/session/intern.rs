//! Sharing of what many connections repeat: the client part of an
//! [`Identity`](crate::event::Identity) (source address, `User-Agent`, `Host`).
//!
//! Clients behind one address (a NAT, a load balancer, a test generator) send the same
//! values over and over; keeping one copy per connection cost about 190 bytes of heap
//! per idle connection (a boxed identity and three strings). A small per-worker
//! 4-way set-associative cache hands out one shared copy instead: a lookup hashes the
//! values (keyed, so a client cannot aim at a set), compares with the set's entries
//! and reuses a match, or makes a new entry that replaces one of the set's in turn
//! (so a few distinct clients, the common case, never evict each other). The cache holds at most
//! [`SLOTS`] entries of each kind, so its memory is bounded whatever clients send; an
//! entry lives as long as a connection or the cache holds it. A connection whose
//! values nobody else sent still gets its own copy, as before.
//!
//! Used at the upgrade only (never on the message path).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;

use crate::event::Client;

/// Entries of each cache (strings, clients).
pub const SLOTS: usize = 64;
/// Entries per set.
const WAYS: usize = 4;

/// A worker's caches.
#[derive(Debug)]
pub struct Clients {
    hasher: RandomState,
    strings: Vec<Option<Arc<str>>>,
    clients: Vec<Option<Arc<Client>>>,
}

impl Default for Clients {
    fn default() -> Clients {
        Clients {
            hasher: RandomState::new(),
            strings: vec![None; SLOTS],
            clients: vec![None; SLOTS],
        }
    }
}

impl Clients {
    /// The shared client with these values (a header's bytes are taken as UTF-8,
    /// invalid sequences replaced).
    pub fn client(
        &mut self,
        ip: IpAddr,
        user_agent: Option<&[u8]>,
        host: Option<&[u8]>,
    ) -> Arc<Client> {
        let user_agent = user_agent.map(|v| self.string(v));
        let host = self.string(host.unwrap_or_default());
        let hash = self.hasher.hash_one((
            ip,
            user_agent
                .as_ref()
                .map(|s| Arc::as_ptr(s) as *const u8 as usize),
            Arc::as_ptr(&host) as *const u8 as usize,
        ));
        let set = set_of(&mut self.clients, hash);
        for c in set.iter().flatten() {
            let same_ua = match (&c.user_agent, &user_agent) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if c.source_ip == ip && same_ua && Arc::ptr_eq(&c.host, &host) {
                return c.clone();
            }
        }
        let c = Arc::new(Client {
            source_ip: ip,
            source_ip_text: ip.to_string().into_boxed_str(),
            user_agent,
            host,
        });
        replace(set, c.clone());
        c
    }

    /// The shared copy of a string.
    fn string(&mut self, bytes: &[u8]) -> Arc<str> {
        let text = String::from_utf8_lossy(bytes);
        let set = set_of(&mut self.strings, self.hasher.hash_one(&*text));
        if let Some(s) = set.iter().flatten().find(|s| ***s == *text) {
            return s.clone();
        }
        let s: Arc<str> = Arc::from(&*text);
        replace(set, s.clone());
        s
    }
}

/// The set of `WAYS` entries a hash picks.
fn set_of<T>(entries: &mut [Option<T>], hash: u64) -> &mut [Option<T>] {
    let first = (hash as usize % (SLOTS / WAYS)) * WAYS;
    &mut entries[first..first + WAYS]
}

/// Puts `v` in the set's first free entry, or else in its first (the others move up,
/// so the oldest goes).
fn replace<T>(set: &mut [Option<T>], v: T) {
    match set.iter_mut().find(|e| e.is_none()) {
        Some(e) => *e = Some(v),
        None => {
            set.rotate_left(1);
            set[WAYS - 1] = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_client_and_others_do_not() {
        let mut c = Clients::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = c.client(ip, Some(b"ua/1"), Some(b"h:1"));
        let b = c.client(ip, Some(b"ua/1"), Some(b"h:1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a.source_ip_text, "10.0.0.1");
        assert_eq!(a.user_agent.as_deref(), Some("ua/1"));
        assert_eq!(&*a.host, "h:1");
        let other_ip = c.client("10.0.0.2".parse().unwrap(), Some(b"ua/1"), Some(b"h:1"));
        assert!(!Arc::ptr_eq(&a, &other_ip));
        // Different clients still share their equal strings.
        assert!(Arc::ptr_eq(&a.host, &other_ip.host));
        let no_ua = c.client(ip, None, Some(b"h:1"));
        assert_eq!(no_ua.user_agent, None);
        let no_host = c.client(ip, None, None);
        assert_eq!(&*no_host.host, "");
        let lossy = c.client(ip, Some(b"a\xffb"), None);
        assert_eq!(lossy.user_agent.as_deref(), Some("a\u{fffd}b"));
    }

    #[test]
    fn a_few_clients_never_evict_each_other() {
        let mut c = Clients::default();
        let first: Vec<Arc<Client>> = (1..=WAYS)
            .map(|i| {
                c.client(
                    format!("127.0.0.{i}").parse().unwrap(),
                    Some(b"ua"),
                    Some(b"h"),
                )
            })
            .collect();
        for _ in 0..3 {
            for (i, f) in first.iter().enumerate() {
                let again = c.client(
                    format!("127.0.0.{}", i + 1).parse().unwrap(),
                    Some(b"ua"),
                    Some(b"h"),
                );
                assert!(Arc::ptr_eq(f, &again));
            }
        }
    }

    #[test]
    fn the_cache_stays_bounded_under_distinct_values() {
        let mut c = Clients::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Arc<Client>> = (0..1000)
            .map(|i| c.client(ip, Some(format!("ua/{i}").as_bytes()), Some(b"h")))
            .collect();
        for (i, h) in held.iter().enumerate() {
            assert_eq!(h.user_agent.as_deref(), Some(&*format!("ua/{i}")));
        }
        assert_eq!(c.clients.len(), SLOTS);
        assert_eq!(c.strings.len(), SLOTS);
        // What the cache no longer holds lives only as long as its connections.
        let cached = c.clients.iter().flatten().count();
        let only_held = held.iter().filter(|h| Arc::strong_count(h) == 1).count();
        assert_eq!(cached + only_held, 1000);
    }
}
