//! What a `mio::Token` names: a listener, the waker, or a slab slot of one kind.

use mio::Token;

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const MANAGEMENT_LISTENER: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);
/// The worker's NATS connection (SPEC §15).
pub const NATS: Token = Token(usize::MAX - 4);

/// A decoded token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listener,
    ManagementListener,
    Waker,
    Nats,
    Client(usize),
    Management(usize),
    Upstream(usize),
}

pub fn client(key: usize) -> Token {
    Token(key << 2)
}

pub fn management(key: usize) -> Token {
    Token((key << 2) | 1)
}

pub fn upstream(key: usize) -> Token {
    Token((key << 2) | 2)
}

pub fn decode(t: Token) -> Kind {
    match t {
        LISTENER => Kind::Listener,
        MANAGEMENT_LISTENER => Kind::ManagementListener,
        WAKER => Kind::Waker,
        NATS => Kind::Nats,
        Token(n) => match n & 3 {
            0 => Kind::Client(n >> 2),
            1 => Kind::Management(n >> 2),
            _ => Kind::Upstream(n >> 2),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for k in [0, 1, 77, 1 << 20] {
            assert_eq!(decode(client(k)), Kind::Client(k));
            assert_eq!(decode(management(k)), Kind::Management(k));
            assert_eq!(decode(upstream(k)), Kind::Upstream(k));
        }
        assert_eq!(decode(LISTENER), Kind::Listener);
        assert_eq!(decode(WAKER), Kind::Waker);
        assert_eq!(decode(NATS), Kind::Nats);
    }
}
