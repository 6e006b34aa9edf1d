//! Close codes (RFC 6455 §7.4) and which ones a peer may send us.

/// 1000: the purpose of the connection was fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the server is going away (shutdown, idle timeout, maximum duration).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the peer broke the protocol.
pub const PROTOCOL: u16 = 1002;
/// 1003: a data type we do not accept (binary with `binary = "reject"`).
pub const UNSUPPORTED: u16 = 1003;
/// 1005: no code was present (never sent on the wire; reported to `$disconnect`).
pub const NO_STATUS: u16 = 1005;
/// A client that does not read while its route responses pile up (wsgate).
pub const POLICY: u16 = 1008;
/// 1006: the TCP connection ended without a close frame (never sent on the wire).
pub const ABNORMAL: u16 = 1006;
/// 1007: a text message or close reason that is not UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// 1009: a frame or message above the configured limit.
pub const TOO_BIG: u16 = 1009;
/// 1011: the server met an unexpected condition.
pub const INTERNAL: u16 = 1011;

/// Whether a peer may put `code` in a close frame: the registered codes that are meant
/// for the wire (1000–1003, 1007–1014) and the application ranges 3000–4999.
pub fn is_valid_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_unassigned_codes_are_invalid() {
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_on_wire(c), "{c}");
        }
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_on_wire(c), "{c}");
        }
    }
}
