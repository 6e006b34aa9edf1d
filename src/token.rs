//! What a `mio::Token` names: a listener, the waker, or a slab slot of one kind.

use mio::Token;

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const MANAGEMENT_LISTENER: Token = Token(usize::MAX - 2);
pub const WAKER: Token = Token(usize::MAX - 3);

/// A decoded token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listener,
    ManagementListener,
    Waker,
    Client(usize),
    Management(usize),
}

pub fn client(key: usize) -> Token {
    Token(key << 1)
}

pub fn management(key: usize) -> Token {
    Token((key << 1) | 1)
}

pub fn decode(t: Token) -> Kind {
    match t {
        LISTENER => Kind::Listener,
        MANAGEMENT_LISTENER => Kind::ManagementListener,
        WAKER => Kind::Waker,
        Token(n) if n & 1 == 0 => Kind::Client(n >> 1),
        Token(n) => Kind::Management(n >> 1),
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
        }
        assert_eq!(decode(LISTENER), Kind::Listener);
        assert_eq!(decode(WAKER), Kind::Waker);
    }
}
