//! Frame headers (RFC 6455 §5.2): decode over `&[u8]`, encode into a stack array.
//! Short input is `Ok(None)`, never an error, as in httparse.

use crate::close;

/// Frame opcodes we know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(b: u8) -> Option<OpCode> {
        Some(match b {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub payload_len: u64,
    /// Bytes the header itself took (2 to 14).
    pub len: usize,
}

/// Why a frame or message was rejected; [`Error::close_code`] is what the peer sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    ReservedBits,
    BadOpcode(u8),
    UnmaskedClientFrame,
    FragmentedControl,
    ControlTooLong,
    /// The 64-bit length had its most significant bit set.
    BadLength,
    ContinuationWithoutStart,
    DataWhileFragmented,
    BadCloseCode(u16),
    ClosePayloadOneByte,
    BinaryRejected,
    InvalidUtf8,
    FrameTooLarge,
    MessageTooLarge,
}

impl Error {
    /// The close code that tells the peer why (SPEC §7).
    pub fn close_code(self) -> u16 {
        match self {
            Error::BinaryRejected => close::UNSUPPORTED,
            Error::InvalidUtf8 => close::INVALID_DATA,
            Error::FrameTooLarge | Error::MessageTooLarge => close::TOO_BIG,
            _ => close::PROTOCOL,
        }
    }

    /// The close reason sent with the code and reported to `$disconnect`.
    pub fn reason(self) -> &'static str {
        match self {
            Error::ReservedBits => "Reserved bits set",
            Error::BadOpcode(_) => "Unknown opcode",
            Error::UnmaskedClientFrame => "Client frame not masked",
            Error::FragmentedControl => "Fragmented control frame",
            Error::ControlTooLong => "Control frame too long",
            Error::BadLength => "Invalid frame length",
            Error::ContinuationWithoutStart => "Continuation frame without a message",
            Error::DataWhileFragmented => "New message inside a fragmented message",
            Error::BadCloseCode(_) => "Invalid close code",
            Error::ClosePayloadOneByte => "Invalid close frame",
            Error::BinaryRejected => "Binary frames are not supported",
            Error::InvalidUtf8 => "Invalid UTF-8",
            Error::FrameTooLarge => "Frame too large",
            Error::MessageTooLarge => "Message too large",
        }
    }
}

/// Largest header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_BYTES: usize = 14;

/// Decodes a client frame header from the start of `buf`; `Ok(None)` when more bytes are
/// needed. Checks everything the header alone can tell (RFC 6455 §5.2, §5.5).
pub fn decode_header(buf: &[u8]) -> Result<Option<Header>, Error> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(Error::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(Error::BadOpcode(b0 & 0x0f))?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() {
        if !fin {
            return Err(Error::FragmentedControl);
        }
        if b1 & 0x7f > 125 {
            return Err(Error::ControlTooLong);
        }
    }
    if b1 & 0x80 == 0 {
        return Err(Error::UnmaskedClientFrame);
    }
    let (payload_len, at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(Error::BadLength);
            }
            (n, 10)
        }
        n => (n as u64, 2),
    };
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_len,
        len: at + 4,
    }))
}

/// Encodes an unmasked server frame header into `out`, returning the bytes used.
pub fn encode_header(out: &mut [u8; 10], fin: bool, opcode: OpCode, payload_len: usize) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode.bits();
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if payload_len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

/// Appends one whole server message to `out`, split into frames of at most
/// `max_frame` payload bytes (SPEC §5: outbound fragmentation).
pub fn write_message(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], max_frame: usize) {
    let max_frame = max_frame.max(1);
    let mut op = opcode;
    let mut rest = payload;
    loop {
        let n = rest.len().min(max_frame);
        let fin = n == rest.len();
        let mut h = [0u8; 10];
        let hl = encode_header(&mut h, fin, op, n);
        out.extend_from_slice(&h[..hl]);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        op = OpCode::Continuation;
        if fin {
            return;
        }
    }
}

/// Appends a close frame with `code` and `reason` (cut to fit 125 bytes on a char boundary).
pub fn write_close(out: &mut Vec<u8>, code: Option<u16>, reason: &str) {
    let Some(code) = code else {
        out.extend_from_slice(&[0x88, 0]);
        return;
    };
    let mut r = reason;
    while r.len() > 123 {
        let mut cut = 123;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r = &r[..cut];
    }
    out.extend_from_slice(&[0x88, (2 + r.len()) as u8]);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(r.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        assert!(std::mem::size_of::<Error>() <= 4);
    }

    #[test]
    fn rfc6455_masked_hello_header() {
        let f = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = decode_header(&f).unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                fin: true,
                opcode: OpCode::Text,
                mask: [0x37, 0xfa, 0x21, 0x3d],
                payload_len: 5,
                len: 6
            }
        );
    }

    #[test]
    fn short_input_is_partial_not_error() {
        let f = [0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4];
        for n in 0..f.len() {
            assert_eq!(decode_header(&f[..n]), Ok(None), "{n}");
        }
        assert_eq!(decode_header(&f).unwrap().unwrap().payload_len, 256);
    }

    #[test]
    fn header_violations() {
        assert_eq!(decode_header(&[0xc1, 0x80]), Err(Error::ReservedBits));
        assert_eq!(decode_header(&[0x83, 0x80]), Err(Error::BadOpcode(3)));
        assert_eq!(
            decode_header(&[0x81, 0x00]),
            Err(Error::UnmaskedClientFrame)
        );
        assert_eq!(decode_header(&[0x09, 0x80]), Err(Error::FragmentedControl));
        assert_eq!(decode_header(&[0x89, 0xfe]), Err(Error::ControlTooLong));
        assert_eq!(
            decode_header(&[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(Error::BadLength)
        );
    }

    #[test]
    fn encode_picks_the_shortest_length() {
        let mut h = [0u8; 10];
        assert_eq!(encode_header(&mut h, true, OpCode::Text, 125), 2);
        assert_eq!(&h[..2], &[0x81, 125]);
        assert_eq!(encode_header(&mut h, false, OpCode::Binary, 126), 4);
        assert_eq!(&h[..4], &[0x02, 126, 0, 126]);
        assert_eq!(encode_header(&mut h, true, OpCode::Binary, 65536), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn outbound_messages_fragment_at_max_frame() {
        let mut out = Vec::new();
        write_message(&mut out, OpCode::Text, &[b'a'; 10], 4);
        assert_eq!(
            out,
            [
                &[0x01, 4][..],
                b"aaaa",
                &[0x00, 4],
                b"aaaa",
                &[0x80, 2],
                b"aa"
            ]
            .concat()
        );
        out.clear();
        write_message(&mut out, OpCode::Text, b"", 4);
        assert_eq!(out, [0x81, 0]);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        write_close(&mut out, Some(1000), &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= 125);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}
