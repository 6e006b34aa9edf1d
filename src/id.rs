//! Connection, request and message ids (SPEC §6): 16 characters, base64url of 11 bytes,
//! AWS-looking, and unpredictable.
//!
//! # Connection ids
//!
//! The 88 bits of a connection id are a keyed permutation of its routing fields:
//!
//! ```text
//! node 8 | worker 8 | epoch 10 | slot 22 | generation 40      (88 bits, before permuting)
//! ```
//!
//! - `node`: which gateway of a cluster owns the connection (0 on a single node);
//! - `worker`: which worker thread of that node;
//! - `epoch`: random per process start, so an id from a previous run is refused (410);
//! - `slot`: the worker's slab slot, so the owner finds the connection in O(1);
//! - `generation`: a per-worker 40-bit accept counter (from a random start), stored in
//!   the connection and compared on every lookup, so a stale id never reaches the
//!   slot's next occupant: a (slot, generation) pair comes back only after 2^40 accepts
//!   on one worker (a year at 35k accepts per second).
//!
//! The block is permuted by an 8-round Feistel network over two 44-bit halves whose
//! round function is SipHash-2-4 under a 128-bit secret ([`Key`]): a random key per
//! process on a single node, later one derived from a shared `cluster.secret` so every
//! node decodes every other's ids. Decoding is the inverse permutation, then the fields:
//! O(1), no map. Consecutive ids look unrelated, and without the key, knowing any
//! number of ids does not help to name another live one: a guess decodes to random
//! fields, which pass the node, epoch and worker checks with probability about 2^-18
//! and then still need a live slot holding that exact 40-bit generation.
//!
//! Trade-offs of the layout: 22 slot bits cap a worker at 4 Mi open connections (the
//! worker refuses more); 8 worker bits and 8 node bits allow 256 of each; 10 epoch bits
//! make a restarted node under the *same* secret recognise an old id only with
//! probability 2^-10, and even then the random generation start makes a live match
//! unlikely. Under a per-process key (today) old ids decode to noise anyway.
//!
//! SipHash comes from the `siphasher` crate (std's `SipHasher` is deprecated): it is a
//! PRF designed for short keyed inputs, fast on 8-byte messages and portable (the same
//! bytes on every node, whatever its endianness), and it needs no hardware support.
//!
//! # Request and message ids
//!
//! [`Sequence`] permutes `node 8 | worker 8 | epoch 10 | counter 62` under the same key
//! in a separate domain with 4 rounds (two per message: cost matters, secrecy less), so
//! they are unique within a process, reveal no counter, and never decode as a
//! connection id.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;

/// Encoded length of every id.
pub const LEN: usize = 16;

/// An encoded id, kept inline (no allocation).
pub type Text = [u8; LEN];

/// Slots a worker may hold: the slot field's 22 bits.
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;
/// Generations wrap after this many accepts on one worker.
pub const GENERATIONS: u64 = 1 << GENERATION_BITS;
/// Epochs: a restart picks one of these at random.
pub const EPOCHS: u16 = 1 << EPOCH_BITS;

const SLOT_BITS: u32 = 22;
const GENERATION_BITS: u32 = 40;
const EPOCH_BITS: u32 = 10;
const COUNTER_BITS: u32 = 62;
const HALF_BITS: u32 = 44;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
/// Permutation domains (a domain byte enters every round function, so the domains are
/// independent permutations): connection ids and request/message ids never decode as
/// each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    /// Feistel rounds: four already make a strong pseudo-random permutation
    /// (Luby–Rackoff); connection ids, whose secrecy matters, get eight for margin
    /// with 44-bit halves (about 130 ns, once per accept and management call).
    Connection,
    /// Request and message ids only must not reveal a counter; they are made twice
    /// per message, so they get the four rounds (about 50–65 ns each).
    Sequence,
}

impl Domain {
    fn rounds(self) -> u8 {
        match self {
            Domain::Connection => 8,
            Domain::Sequence => 4,
        }
    }
}

/// The decoded parts of a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionId {
    pub node: u8,
    pub worker: u8,
    /// Random per process start, 10 bits.
    pub epoch: u16,
    /// Slab slot, 22 bits.
    pub slot: u32,
    /// Per-worker accept counter, 40 bits.
    pub generation: u64,
}

/// Why a string is not a live connection's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not 15 characters of `[A-Za-z0-9_-]` followed by `=` (or `%3D`): a 400.
    Malformed,
    /// Well-formed, but no gateway issued it (a non-canonical encoding): a 410.
    NotIssued,
}

/// The 128-bit secret under which ids are permuted.
#[derive(Clone, Copy)]
pub struct Key(SipHasher24);

impl Key {
    /// A random key for this process (ids mean nothing to another process).
    pub fn random() -> Key {
        Key(SipHasher24::new_with_key(&random_bytes()))
    }

    /// A key derived from a shared secret, so that several nodes decode each other's ids.
    pub fn from_secret(secret: &[u8]) -> Key {
        let digest = Sha256::digest(secret);
        let mut k = [0u8; 16];
        k.copy_from_slice(&digest[..16]);
        Key(SipHasher24::new_with_key(&k))
    }

    /// The Feistel round function: 44 pseudo-random bits of (domain, round, half).
    fn round(&self, domain: Domain, round: u8, half: u64) -> u64 {
        let input = half | (u64::from(round) << 48) | ((domain as u64) << 56);
        self.0.hash(&input.to_le_bytes()) & HALF_MASK
    }

    /// Permutes an 88-bit block.
    fn permute(&self, domain: Domain, block: u128) -> u128 {
        let (mut l, mut r) = ((block >> HALF_BITS) as u64, block as u64 & HALF_MASK);
        for i in 0..domain.rounds() {
            (l, r) = (r, l ^ self.round(domain, i, r));
        }
        (u128::from(l) << HALF_BITS) | u128::from(r)
    }

    /// Inverts [`Key::permute`].
    fn unpermute(&self, domain: Domain, block: u128) -> u128 {
        let (mut l, mut r) = ((block >> HALF_BITS) as u64, block as u64 & HALF_MASK);
        for i in (0..domain.rounds()).rev() {
            (l, r) = (r ^ self.round(domain, i, l), l);
        }
        (u128::from(l) << HALF_BITS) | u128::from(r)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Encodes and decodes this node's ids: the key, the node number and this start's epoch.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    key: Key,
    node: u8,
    epoch: u16,
}

impl Codec {
    /// `epoch` is taken modulo [`EPOCHS`].
    pub fn new(key: Key, node: u8, epoch: u16) -> Codec {
        Codec {
            key,
            node,
            epoch: epoch % EPOCHS,
        }
    }

    /// A single node's codec: a random key and a random epoch.
    pub fn random() -> Codec {
        let [a, b] = random_bytes::<2>();
        Codec::new(Key::random(), 0, u16::from_le_bytes([a, b]))
    }

    pub fn node(&self) -> u8 {
        self.node
    }

    /// This start's epoch (a cluster heartbeat carries it, so other nodes answer 410
    /// for a restarted node's old ids without asking it).
    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    /// The id of this node's connection in `worker`'s `slot` with `generation`.
    pub fn connection(&self, worker: u8, slot: u32, generation: u64) -> Text {
        self.encode(&ConnectionId {
            node: self.node,
            worker,
            epoch: self.epoch,
            slot,
            generation,
        })
    }

    /// Encodes any id's fields (each taken modulo its width).
    pub fn encode(&self, id: &ConnectionId) -> Text {
        let block = (u128::from(id.node) << 80)
            | (u128::from(id.worker) << 72)
            | (u128::from(id.epoch % EPOCHS) << 62)
            | (u128::from(id.slot % MAX_SLOTS as u32) << GENERATION_BITS)
            | u128::from(id.generation % GENERATIONS);
        encode(self.key.permute(Domain::Connection, block))
    }

    /// Decodes an id in its raw or percent-encoded (`%3D` for `=`) form. The fields of
    /// an id this key never produced are noise: check them with [`Codec::is_local`] and
    /// the worker count, then the generation stored in the slot.
    pub fn decode(&self, s: &[u8]) -> Result<ConnectionId, ParseError> {
        let b = self.key.unpermute(Domain::Connection, decode(s)?);
        Ok(ConnectionId {
            node: (b >> 80) as u8,
            worker: (b >> 72) as u8,
            epoch: (b >> 62) as u16 % EPOCHS,
            slot: (b >> GENERATION_BITS) as u32 % MAX_SLOTS as u32,
            generation: b as u64 % GENERATIONS,
        })
    }

    /// Whether `id` belongs to this node in this start (else it is gone: 410).
    pub fn is_local(&self, id: &ConnectionId) -> bool {
        id.node == self.node && id.epoch == self.epoch
    }
}

/// A worker's source of connection generations: 40 bits from a random start, so a
/// value comes back only after 2^40 accepts.
#[derive(Debug)]
pub struct Generations {
    next: u64,
}

impl Generations {
    pub fn starting_at(first: u64) -> Generations {
        Generations {
            next: first % GENERATIONS,
        }
    }

    /// Starts at a random point, so a restart under a shared key repeats no pair.
    pub fn random() -> Generations {
        Generations::starting_at(u64::from_le_bytes(random_bytes()))
    }

    /// The next generation to give a new connection.
    pub fn issue(&mut self) -> u64 {
        let g = self.next;
        self.next = (g + 1) % GENERATIONS;
        g
    }
}

/// Makes request and message ids for one worker: a 62-bit counter permuted under the
/// node's key, so ids are unique within a process and reveal nothing.
#[derive(Debug)]
pub struct Sequence {
    codec: Codec,
    /// `node | worker | epoch` above the counter.
    prefix: u128,
    next: u64,
}

impl Sequence {
    pub fn new(codec: Codec, worker: u8) -> Sequence {
        let prefix = (u128::from(codec.node) << 80)
            | (u128::from(worker) << 72)
            | (u128::from(codec.epoch) << COUNTER_BITS);
        Sequence {
            codec,
            prefix,
            next: 0,
        }
    }

    pub fn next_id(&mut self) -> Text {
        self.next = (self.next + 1) & ((1 << COUNTER_BITS) - 1);
        let block = self.prefix | u128::from(self.next);
        encode(self.codec.key.permute(Domain::Sequence, block))
    }
}

/// `N` random bytes from the OS; the clock and pid if it has none (ids then stay
/// unique, only less unpredictable).
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if getrandom::fill(&mut b).is_err() {
        log::warn!("no OS randomness: ids are derived from the clock");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            ^ u128::from(std::process::id()) << 96;
        let h = Sha256::digest(t.to_le_bytes());
        for (i, x) in b.iter_mut().enumerate() {
            *x = h[i % h.len()];
        }
    }
    b
}

/// The base64url text of an 88-bit block.
fn encode(block: u128) -> Text {
    let raw: [u8; 11] = block.to_be_bytes()[5..].try_into().expect("11 of 16 bytes");
    let mut out = [0u8; LEN];
    let n = URL_SAFE
        .encode_slice(raw, &mut out)
        .expect("11 bytes encode to 16");
    debug_assert_eq!(n, LEN);
    out
}

/// The 88-bit block of an id's text, raw or with `%3D` for `=`. Only the canonical
/// text of a block is accepted: the last character carries 2 unused bits, which must
/// be zero, so each id has exactly one spelling.
fn decode(s: &[u8]) -> Result<u128, ParseError> {
    let body = match s.len() {
        LEN if s[15] == b'=' => &s[..15],
        18 if s[15..].eq_ignore_ascii_case(b"%3D") => &s[..15],
        _ => return Err(ParseError::Malformed),
    };
    let mut block: u128 = 0;
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(ParseError::Malformed),
        };
        block = (block << 6) | u128::from(v);
    }
    // 15 characters hold 90 bits: 88 of the id and 2 that the encoder leaves zero.
    if block & 0b11 != 0 {
        return Err(ParseError::NotIssued);
    }
    Ok(block >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_aws_shaped(t: &[u8]) -> bool {
        t.len() == 16
            && t[..15]
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            && t[15] == b'='
    }

    fn codec(secret: &str) -> Codec {
        Codec::new(Key::from_secret(secret.as_bytes()), 3, 700)
    }

    fn text(t: &Text) -> &str {
        std::str::from_utf8(t).unwrap()
    }

    #[test]
    fn connection_id_round_trips_raw_and_percent_encoded() {
        let c = codec("s");
        let id = ConnectionId {
            node: 3,
            worker: 7,
            epoch: 700,
            slot: MAX_SLOTS as u32 - 1,
            generation: GENERATIONS - 1,
        };
        let t = c.encode(&id);
        assert!(is_aws_shaped(&t), "{}", text(&t));
        assert_eq!(c.decode(&t), Ok(id));
        assert!(c.is_local(&id));
        let mut pct = t[..15].to_vec();
        pct.extend_from_slice(b"%3d");
        assert_eq!(c.decode(&pct), Ok(id));
    }

    #[test]
    fn permutation_round_trips_on_many_blocks() {
        let k = Key::from_secret(b"k");
        let mut x: u128 = 0x1234_5678_9abc_def0_1122;
        for _ in 0..2000 {
            x = (x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407))
                & ((1 << 88) - 1);
            for d in [Domain::Connection, Domain::Sequence] {
                let p = k.permute(d, x);
                assert!(p < 1 << 88);
                assert_eq!(k.unpermute(d, p), x);
                assert_eq!(decode(&encode(p)), Ok(p));
            }
            assert_ne!(
                k.permute(Domain::Connection, x),
                k.permute(Domain::Sequence, x)
            );
        }
    }

    #[test]
    fn generation_does_not_wrap_at_2_pow_24_but_at_2_pow_40() {
        let mut g = Generations::starting_at((1 << 24) - 1);
        assert_eq!(g.issue(), (1 << 24) - 1);
        assert_eq!(g.issue(), 1 << 24);
        let mut g = Generations::starting_at(GENERATIONS - 1);
        assert_eq!(g.issue(), GENERATIONS - 1);
        assert_eq!(g.issue(), 0);
        // Ids of the same slot 2^24 generations apart differ (they collided before).
        let c = codec("s");
        assert_ne!(c.connection(0, 5, 1), c.connection(0, 5, 1 + (1 << 24)));
        let id = c.decode(&c.connection(0, 5, 1 << 39)).unwrap();
        assert_eq!(id.generation, 1 << 39);
    }

    #[test]
    fn different_keys_and_epochs_give_different_ids() {
        let (a, b) = (codec("a"), codec("b"));
        assert_ne!(a.connection(0, 0, 0), b.connection(0, 0, 0));
        let other_epoch = Codec::new(Key::from_secret(b"a"), 3, 701);
        assert_ne!(a.connection(0, 0, 0), other_epoch.connection(0, 0, 0));
        // An id from another key or epoch decodes to fields that are not local.
        let foreign = b.connection(0, 0, 0);
        assert!(!a.decode(&foreign).is_ok_and(|id| a.is_local(&id)));
        assert!(!a
            .decode(&other_epoch.connection(0, 0, 0))
            .is_ok_and(|id| a.is_local(&id)));
    }

    #[test]
    fn consecutive_ids_differ_in_many_bits() {
        let c = codec("s");
        let mut total = 0;
        for g in 0..200u64 {
            let x = decode(&c.connection(1, 2, g)).unwrap();
            let y = decode(&c.connection(1, 2, g + 1)).unwrap();
            let d = (x ^ y).count_ones();
            assert!(d >= 16, "generation {g}: only {d} bits differ");
            total += d;
        }
        // About half of 88 bits on average.
        assert!((30 * 200..58 * 200).contains(&total), "{total}");
    }

    #[test]
    fn guessed_neighbours_are_not_local() {
        let c = codec("s");
        let t = c.connection(0, 9, 12345);
        let mut refused = 0;
        for i in 0..15 {
            for ch in [b'A', b'Q', b'g', b'w'] {
                let mut g = t;
                if g[i] == ch {
                    continue;
                }
                g[i] = ch;
                match c.decode(&g) {
                    Ok(id) if c.is_local(&id) && id.worker == 0 => {}
                    _ => refused += 1,
                }
            }
        }
        assert!(refused >= 55, "{refused}");
    }

    #[test]
    fn malformed_and_non_canonical_ids_are_rejected() {
        let c = codec("s");
        for bad in [
            &b""[..],
            b"abc",
            b"AAAAAAAAAAAAAAA!",
            b"AAAAAAAAAAAAAAAA",
            b"AAAAAAAAAAAAAA*=",
            b"AAAAAAAAAAAAAAAAA=",
            "AAAAAAAAAAAAAé=".as_bytes(),
        ] {
            assert_eq!(c.decode(bad), Err(ParseError::Malformed), "{bad:?}");
        }
        // The last character's 2 spare bits set: same block, another spelling.
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut t = c.connection(0, 1, 2);
        let last = alphabet.iter().position(|&a| a == t[14]).unwrap();
        assert_eq!(last & 3, 0, "canonical spelling");
        t[14] = alphabet[last | 1];
        assert_eq!(c.decode(&t), Err(ParseError::NotIssued));
    }

    #[test]
    fn sequence_ids_are_unique_shaped_and_not_counters() {
        let c = codec("s");
        let mut s = Sequence::new(c, 1);
        let ids: Vec<Text> = (0..1000).map(|_| s.next_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.iter().all(|t| is_aws_shaped(t)));
        // No shared prefix between neighbours as a counter would have.
        let same_prefix = ids.windows(2).filter(|w| w[0][..8] == w[1][..8]).count();
        assert_eq!(same_prefix, 0);
        // And they are not connection ids of this node.
        let local = ids
            .iter()
            .filter(|t| c.decode(&t[..]).is_ok_and(|id| c.is_local(&id)))
            .count();
        assert!(local < 5, "{local}");
    }
}
