//! Connection, request and message ids (SPEC §6): 16 characters, base64url of 11 bytes,
//! AWS-looking. A connection id carries its worker, slab slot and slot generation plus a
//! random per-process epoch, so any worker routes a management call in O(1) without a
//! global map, and no id survives a restart or is reused.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;

/// Encoded length of every id.
pub const LEN: usize = 16;

/// An encoded id, kept inline (no allocation).
pub type Text = [u8; LEN];

/// The decoded parts of a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionId {
    pub worker: u8,
    /// Slab slot, 24 bits.
    pub slot: u32,
    /// Generation of the slot, 24 bits (wraps).
    pub generation: u32,
    pub epoch: u32,
}

/// Why a string is not a connection id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not 16 characters of `[A-Za-z0-9_-]` followed by `=`: a 400.
    Malformed,
}

impl ConnectionId {
    pub fn encode(&self) -> Text {
        let mut raw = [0u8; 11];
        raw[0] = self.worker;
        raw[1..4].copy_from_slice(&self.slot.to_be_bytes()[1..]);
        raw[4..7].copy_from_slice(&self.generation.to_be_bytes()[1..]);
        raw[7..11].copy_from_slice(&self.epoch.to_be_bytes());
        encode(&raw)
    }

    /// Decodes an id in its raw or percent-encoded (`%3D` for `=`) form.
    pub fn parse(s: &[u8]) -> Result<ConnectionId, ParseError> {
        let s = match s.len() {
            LEN => s,
            18 if s[15..].eq_ignore_ascii_case(b"%3D") => &s[..15],
            _ => return Err(ParseError::Malformed),
        };
        let body = &s[..15];
        if !body
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(ParseError::Malformed);
        }
        if s.len() == LEN && s[15] != b'=' {
            return Err(ParseError::Malformed);
        }
        let mut padded = [b'='; LEN];
        padded[..15].copy_from_slice(body);
        let mut raw = [0u8; 12];
        let n = base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::URL_SAFE,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        )
        .decode_slice(padded, &mut raw)
        .map_err(|_| ParseError::Malformed)?;
        if n != 11 {
            return Err(ParseError::Malformed);
        }
        Ok(ConnectionId {
            worker: raw[0],
            slot: u32::from_be_bytes([0, raw[1], raw[2], raw[3]]),
            generation: u32::from_be_bytes([0, raw[4], raw[5], raw[6]]),
            epoch: u32::from_be_bytes([raw[7], raw[8], raw[9], raw[10]]),
        })
    }
}

/// Makes request and message ids for one worker: worker byte, a 48-bit counter and the
/// process epoch, so ids are unique within a process and unlikely to repeat across runs.
#[derive(Debug)]
pub struct Sequence {
    worker: u8,
    epoch: u32,
    next: u64,
}

impl Sequence {
    pub fn new(worker: u8, epoch: u32) -> Sequence {
        Sequence {
            worker,
            epoch,
            next: 0,
        }
    }

    pub fn next_id(&mut self) -> Text {
        self.next = self.next.wrapping_add(1);
        let mut raw = [0u8; 11];
        raw[0] = self.worker;
        raw[1..7].copy_from_slice(&self.next.to_be_bytes()[2..]);
        raw[7..11].copy_from_slice(&(self.epoch ^ 0x5bd1_e995).to_be_bytes());
        encode(&raw)
    }
}

/// A random epoch for this process.
pub fn random_epoch() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u32 ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}

fn encode(raw: &[u8; 11]) -> Text {
    let mut out = [0u8; LEN];
    let n = URL_SAFE
        .encode_slice(raw, &mut out)
        .expect("11 bytes encode to 16");
    debug_assert_eq!(n, LEN);
    out
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

    #[test]
    fn connection_id_round_trips() {
        let id = ConnectionId {
            worker: 3,
            slot: 0xabcdef,
            generation: 0x123456,
            epoch: 0xdeadbeef,
        };
        let t = id.encode();
        assert!(is_aws_shaped(&t), "{}", String::from_utf8_lossy(&t));
        assert_eq!(ConnectionId::parse(&t), Ok(id));
        let mut pct = t[..15].to_vec();
        pct.extend_from_slice(b"%3d");
        assert_eq!(ConnectionId::parse(&pct), Ok(id));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            &b""[..],
            b"abc",
            b"AAAAAAAAAAAAAAA!",
            b"AAAAAAAAAAAAAAAA",
            b"AAAAAAAAAAAAAA*=",
            b"AAAAAAAAAAAAAAAAA=",
        ] {
            assert_eq!(
                ConnectionId::parse(bad),
                Err(ParseError::Malformed),
                "{:?}",
                bad
            );
        }
    }

    #[test]
    fn sequence_ids_are_unique_and_shaped() {
        let mut s = Sequence::new(1, 42);
        let a = s.next_id();
        let b = s.next_id();
        assert_ne!(a, b);
        assert!(is_aws_shaped(&a) && is_aws_shaped(&b));
    }
}
