//! Messages from frames (RFC 6455 §5.4–§5.6): fragment assembly, interleaved control
//! frames, streaming UTF-8 validation that fails fast, and the frame/message limits.
//!
//! Sans-IO and incremental: [`Reader::read`] takes whatever bytes arrived, unmasks them
//! in place and returns at most one [`Event`]. A message whose single frame arrived
//! whole is handed out as a range of the input (no copy); anything else streams into
//! the connection's assembly buffer, borrowed from the worker's [`Pool`] only while a
//! message is incomplete.

use std::ops::Range;

use crate::buf::Pool;
use crate::close;
use crate::frame::{self, Error, OpCode};
use crate::mask;

/// Limits that apply to every client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub allow_binary: bool,
}

/// A data message's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

impl Kind {
    pub fn opcode(self) -> OpCode {
        match self {
            Kind::Text => OpCode::Text,
            Kind::Binary => OpCode::Binary,
        }
    }
}

/// Where a complete message's payload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// These bytes of the input given to `read` (already unmasked).
    Input(Range<usize>),
    /// The whole assembly buffer; the caller empties it after use.
    Assembled,
}

/// What one call to [`Reader::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message {
        kind: Kind,
        payload: Payload,
    },
    Ping(Range<usize>),
    Pong(Range<usize>),
    /// A close frame; `reason` is a range of the input, already checked to be UTF-8.
    Close {
        code: Option<u16>,
        reason: Range<usize>,
    },
}

/// The data frame whose payload is arriving.
#[derive(Debug, Clone, Copy)]
struct Streaming {
    fin: bool,
    mask: [u8; 4],
    remaining: u64,
    offset: usize,
}

/// Per-connection reading state: a few dozen bytes, no buffer.
#[derive(Debug, Default)]
pub struct Reader {
    frame: Option<Streaming>,
    /// The kind of the message being assembled, once its first frame was seen.
    message: Option<Kind>,
    message_len: usize,
    utf8: Utf8,
}

impl Reader {
    /// Between messages: no frame and no message in progress, so the state is as
    /// good as a fresh `Reader` (the rest is reset when a message starts).
    pub fn is_idle(&self) -> bool {
        self.frame.is_none() && self.message.is_none()
    }

    /// Consumes bytes from the start of `input`, returning how many were used and the
    /// event completed by them, if any. `Ok((n, None))` means `input[n..]` (a partial
    /// header or control frame, at most [`MAX_PARTIAL_BYTES`]) must be kept and given
    /// again, followed by more bytes.
    pub fn read(
        &mut self,
        input: &mut [u8],
        asm: &mut Option<Vec<u8>>,
        pool: &mut Pool,
        limits: &Limits,
    ) -> Result<(usize, Option<Event>), Error> {
        let mut pos = 0;
        loop {
            if let Some(f) = self.frame {
                let avail = (input.len() - pos).min(f.remaining.min(usize::MAX as u64) as usize);
                if avail == 0 && f.remaining > 0 {
                    return Ok((pos, None));
                }
                let chunk = &mut input[pos..pos + avail];
                mask::apply(chunk, f.mask, f.offset);
                if self.message == Some(Kind::Text) {
                    self.utf8.feed(chunk)?;
                }
                let buf = asm.get_or_insert_with(|| pool.take());
                if buf.is_empty() {
                    buf.reserve(f.remaining.min(limits.max_message_bytes as u64) as usize);
                }
                buf.extend_from_slice(chunk);
                pos += avail;
                let f = self.frame.as_mut().expect("streaming");
                f.remaining -= avail as u64;
                f.offset += avail;
                if f.remaining > 0 {
                    return Ok((pos, None));
                }
                let fin = f.fin;
                self.frame = None;
                if fin {
                    return Ok((pos, Some(self.finish(Payload::Assembled)?)));
                }
                continue;
            }

            let Some(h) = frame::decode_header(&input[pos..])? else {
                return Ok((pos, None));
            };
            let len = h.payload_len;
            if h.opcode.is_control() {
                let end = pos + h.len + len as usize;
                if input.len() < end {
                    return Ok((pos, None));
                }
                let p = pos + h.len..end;
                mask::apply(&mut input[p.clone()], h.mask, 0);
                let ev = match h.opcode {
                    OpCode::Ping => Event::Ping(p),
                    OpCode::Pong => Event::Pong(p),
                    _ => close_event(input, p)?,
                };
                return Ok((end, Some(ev)));
            }
            if len > limits.max_frame_bytes as u64 {
                return Err(Error::FrameTooLarge);
            }
            let len = len as usize;
            match (h.opcode, self.message) {
                (OpCode::Continuation, None) => return Err(Error::ContinuationWithoutStart),
                (OpCode::Continuation, Some(_)) => {}
                (_, Some(_)) => return Err(Error::DataWhileFragmented),
                (op, None) => {
                    let kind = if op == OpCode::Text {
                        Kind::Text
                    } else {
                        Kind::Binary
                    };
                    if kind == Kind::Binary && !limits.allow_binary {
                        return Err(Error::BinaryRejected);
                    }
                    self.message = Some(kind);
                    self.message_len = 0;
                    self.utf8 = Utf8::default();
                }
            }
            if self.message_len + len > limits.max_message_bytes {
                return Err(Error::MessageTooLarge);
            }
            self.message_len += len;
            pos += h.len;
            let whole =
                h.fin && input.len() - pos >= len && asm.as_ref().is_none_or(|b| b.is_empty());
            if whole {
                // The common case: one frame, all here. Hand out its bytes in place.
                let p = pos..pos + len;
                mask::apply(&mut input[p.clone()], h.mask, 0);
                if self.message == Some(Kind::Text) {
                    self.utf8.feed(&input[p.clone()])?;
                }
                return Ok((p.end, Some(self.finish(Payload::Input(p))?)));
            }
            self.frame = Some(Streaming {
                fin: h.fin,
                mask: h.mask,
                remaining: len as u64,
                offset: 0,
            });
        }
    }

    fn finish(&mut self, payload: Payload) -> Result<Event, Error> {
        let kind = self.message.take().expect("a message is open");
        if kind == Kind::Text {
            self.utf8.finish()?;
        }
        Ok(Event::Message { kind, payload })
    }

    /// Whether a message is partly received (its assembly buffer must be kept).
    pub fn in_message(&self) -> bool {
        self.message.is_some()
    }
}

/// Most bytes `read` can ask the caller to keep: a control frame with a 16-bit length
/// field (non-minimal but legal) and 125 bytes of payload.
pub const MAX_PARTIAL_BYTES: usize = 8 + 125;

fn close_event(input: &[u8], p: Range<usize>) -> Result<Event, Error> {
    match p.len() {
        0 => Ok(Event::Close {
            code: None,
            reason: p.end..p.end,
        }),
        1 => Err(Error::ClosePayloadOneByte),
        _ => {
            let code = u16::from_be_bytes([input[p.start], input[p.start + 1]]);
            if !close::is_valid_on_wire(code) {
                return Err(Error::BadCloseCode(code));
            }
            let reason = p.start + 2..p.end;
            std::str::from_utf8(&input[reason.clone()]).map_err(|_| Error::InvalidUtf8)?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

/// Streaming UTF-8 validation: carries an incomplete code point across chunks and
/// rejects a sequence as soon as its first impossible byte arrives.
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8 {
    pending: [u8; 4],
    n: u8,
}

impl Utf8 {
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Error> {
        if self.n > 0 {
            let n = self.n as usize;
            let take = (4 - n).min(chunk.len());
            let mut tmp = self.pending;
            tmp[n..n + take].copy_from_slice(&chunk[..take]);
            match std::str::from_utf8(&tmp[..n + take]) {
                Ok(_) => {
                    self.n = 0;
                    chunk = &chunk[take..];
                }
                Err(e) if e.valid_up_to() >= n => {
                    self.n = 0;
                    chunk = &chunk[e.valid_up_to() - n..];
                }
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix: the chunk was too short to complete it.
                    self.pending = tmp;
                    self.n = (n + take) as u8;
                    return Ok(());
                }
                Err(_) => return Err(Error::InvalidUtf8),
            }
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.n = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(Error::InvalidUtf8),
        }
    }

    /// At the end of a message no code point may be left open.
    pub fn finish(&mut self) -> Result<(), Error> {
        let open = self.n != 0;
        *self = Utf8::default();
        if open {
            Err(Error::InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut f = vec![(if fin { 0x80 } else { 0 }) | op];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        let mut p = payload.to_vec();
        mask::apply(&mut p, key, 0);
        f.extend_from_slice(&p);
        f
    }

    const LIMITS: Limits = Limits {
        max_frame_bytes: 1024,
        max_message_bytes: 4096,
        allow_binary: true,
    };

    /// Feeds `stream` in the given chunk sizes, returning every event with its payload.
    fn run(stream: &[u8], chunk: usize, limits: &Limits) -> Result<Vec<(String, Vec<u8>)>, Error> {
        run_pieces(stream.chunks(chunk.max(1)), limits)
    }

    /// Feeds `stream` cut at the given offsets.
    fn run_split(
        stream: &[u8],
        cuts: &[usize],
        limits: &Limits,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            pieces.push(&stream[at..c]);
            at = c;
        }
        run_pieces(pieces.into_iter(), limits)
    }

    fn run_pieces<'a>(
        pieces: impl Iterator<Item = &'a [u8]>,
        limits: &Limits,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let (mut r, mut asm, mut pool) = (Reader::default(), None, Pool::new(4));
        let mut out = Vec::new();
        let mut keep: Vec<u8> = Vec::new();
        for c in pieces {
            let mut input = std::mem::take(&mut keep);
            input.extend_from_slice(c);
            let mut pos = 0;
            loop {
                let (n, ev) = r.read(&mut input[pos..], &mut asm, &mut pool, limits)?;
                let base = pos;
                pos += n;
                let Some(ev) = ev else { break };
                let at = |range: Range<usize>| input[base + range.start..base + range.end].to_vec();
                out.push(match ev {
                    Event::Message {
                        kind,
                        payload: Payload::Input(p),
                    } => (format!("{kind:?}"), at(p)),
                    Event::Message {
                        kind,
                        payload: Payload::Assembled,
                    } => {
                        let b = asm.take().unwrap();
                        let v = b.clone();
                        pool.give(b);
                        (format!("{kind:?}"), v)
                    }
                    Event::Ping(p) => ("Ping".into(), at(p)),
                    Event::Pong(p) => ("Pong".into(), at(p)),
                    Event::Close { code, reason } => (format!("Close({code:?})"), at(reason)),
                });
            }
            keep = input[pos..].to_vec();
            assert!(keep.len() <= MAX_PARTIAL_BYTES);
        }
        Ok(out)
    }

    #[test]
    fn single_frame_text_is_delivered_in_place() {
        let f = masked(true, 1, b"Hello");
        let (mut r, mut asm, mut pool) = (Reader::default(), None, Pool::new(1));
        let mut input = f.clone();
        let (n, ev) = r.read(&mut input, &mut asm, &mut pool, &LIMITS).unwrap();
        assert_eq!(n, f.len());
        assert_eq!(
            ev,
            Some(Event::Message {
                kind: Kind::Text,
                payload: Payload::Input(6..11)
            })
        );
        assert_eq!(&input[6..11], b"Hello");
        assert!(asm.is_none(), "no buffer borrowed for a whole frame");
    }

    #[test]
    fn fragments_with_interleaved_ping_assemble() {
        let s = [
            masked(false, 1, b"Hel"),
            masked(true, 9, b"p"),
            masked(true, 0, b"lo"),
        ]
        .concat();
        for chunk in 1..=s.len() {
            let ev = run(&s, chunk, &LIMITS).unwrap();
            assert_eq!(
                ev,
                vec![
                    ("Ping".into(), b"p".to_vec()),
                    ("Text".into(), b"Hello".to_vec())
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn protocol_violations() {
        let cases: Vec<(Vec<u8>, Error)> = vec![
            (masked(true, 0, b"x"), Error::ContinuationWithoutStart),
            (
                [masked(false, 1, b"a"), masked(true, 1, b"b")].concat(),
                Error::DataWhileFragmented,
            ),
            (masked(true, 8, &[0x03]), Error::ClosePayloadOneByte),
            (
                masked(true, 8, &1005u16.to_be_bytes()),
                Error::BadCloseCode(1005),
            ),
            (masked(true, 8, &[0x03, 0xe8, 0xff]), Error::InvalidUtf8),
            (
                masked(true, 1, &[0xce, 0xba, 0xe1, 0xbd]),
                Error::InvalidUtf8,
            ),
            (masked(true, 1, &[0xff]), Error::InvalidUtf8),
            (masked(true, 1, &[b'a'; 1025]), Error::FrameTooLarge),
            (
                [
                    masked(false, 1, &[b'a'; 1024]),
                    masked(false, 0, &[b'a'; 1024]),
                    masked(false, 0, &[b'a'; 1024]),
                    masked(false, 0, &[b'a'; 1024]),
                    masked(true, 0, b"a"),
                ]
                .concat(),
                Error::MessageTooLarge,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(run(&s, s.len(), &LIMITS), Err(want));
            assert_eq!(run(&s, 1, &LIMITS), Err(want));
        }
        let reject = Limits {
            allow_binary: false,
            ..LIMITS
        };
        assert_eq!(
            run(&masked(true, 2, b"b"), 64, &reject),
            Err(Error::BinaryRejected)
        );
    }

    #[test]
    fn invalid_utf8_fails_before_the_frame_ends() {
        // 0xf4 0x90 can never start a valid code point: fail on the chunk that holds it.
        let mut payload = vec![b'a'; 100];
        payload[10] = 0xf4;
        payload[11] = 0x90;
        let f = masked(true, 1, &payload);
        let (mut r, mut asm, mut pool) = (Reader::default(), None, Pool::new(1));
        let mut first = f[..6 + 20].to_vec();
        assert_eq!(
            r.read(&mut first, &mut asm, &mut pool, &LIMITS),
            Err(Error::InvalidUtf8)
        );
    }

    #[test]
    fn utf8_split_anywhere_is_accepted() {
        let text = "κόσμε€𐍈 done".as_bytes();
        for split in 0..text.len() {
            let mut u = Utf8::default();
            u.feed(&text[..split]).unwrap();
            u.feed(&text[split..]).unwrap();
            u.finish().unwrap();
        }
        let mut u = Utf8::default();
        u.feed(&[0xe2, 0x82]).unwrap();
        assert_eq!(u.finish(), Err(Error::InvalidUtf8));
    }

    #[test]
    fn close_with_code_and_reason() {
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        let ev = run(&masked(true, 8, &p), 3, &LIMITS).unwrap();
        assert_eq!(ev, vec![("Close(Some(1000))".into(), b"bye".to_vec())]);
        let ev = run(&masked(true, 8, b""), 1, &LIMITS).unwrap();
        assert_eq!(ev, vec![("Close(None)".into(), vec![])]);
    }

    #[test]
    fn empty_and_large_messages() {
        let big = vec![b'x'; 70_000];
        let limits = Limits {
            max_frame_bytes: 100_000,
            max_message_bytes: 100_000,
            allow_binary: true,
        };
        let s = [masked(true, 1, b""), masked(true, 2, &big)].concat();
        let ev = run(&s, 4096, &limits).unwrap();
        assert_eq!(ev, vec![("Text".into(), vec![]), ("Binary".into(), big)]);
    }

    /// A stream of messages, each a list of fragments, as (kind, fragments, ping between).
    fn stream_strategy(
    ) -> impl proptest::strategy::Strategy<Value = (Vec<u8>, Vec<(String, Vec<u8>)>)> {
        use proptest::prelude::*;
        let msg = (
            any::<bool>(),
            proptest::collection::vec(proptest::collection::vec(any::<char>(), 0..40), 1..4),
            any::<bool>(),
        );
        proptest::collection::vec(msg, 1..6).prop_map(|msgs| {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (binary, frags, ping) in msgs {
                let frags: Vec<Vec<u8>> = frags
                    .iter()
                    .map(|f| f.iter().collect::<String>().into_bytes())
                    .collect();
                let n = frags.len();
                for (i, f) in frags.iter().enumerate() {
                    let op = if i > 0 {
                        0
                    } else if binary {
                        2
                    } else {
                        1
                    };
                    stream.extend(masked(i + 1 == n, op, f));
                    if ping && i == 0 && n > 1 {
                        // A ping between fragments is delivered before the message.
                        stream.extend(masked(true, 9, b"pp"));
                        want.push(("Ping".to_string(), b"pp".to_vec()));
                    }
                }
                want.push((
                    if binary { "Binary" } else { "Text" }.to_string(),
                    frags.concat(),
                ));
                if ping && n == 1 {
                    stream.extend(masked(true, 9, b"pp"));
                    want.push(("Ping".to_string(), b"pp".to_vec()));
                }
            }
            (stream, want)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_split_decodes_the_same((stream, want) in stream_strategy(), cuts in proptest::collection::vec(0usize..10_000, 0..12)) {
            let got = run_split(&stream, &cuts, &LIMITS).unwrap();
            proptest::prop_assert_eq!(got, want);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), cuts in proptest::collection::vec(0usize..600, 0..6)) {
            let _ = run_split(&bytes, &cuts, &LIMITS);
        }
    }
}
