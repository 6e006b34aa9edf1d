//! WebSocket client side (RFC 6455): the upgrade request and the check of the 101,
//! masked frame encoding, frame decoding with reassembly of fragmented messages, and
//! `WsConn`, a non-blocking client connection driven by mio events.

use crate::net::{self, OutBuf, ReadOutcome};
use crate::tls::{Stream, TlsClient};
use base64::Engine;
use sha1::{Digest, Sha1};
use std::net::SocketAddr;

pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
pub const OP_CONT: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

/// Where to connect: `ws://IP:PORT/path` or `wss://IP:PORT/path`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    /// The URL was `wss://`.
    pub secure: bool,
    /// How to make TLS connections; set by [`Target::with_tls`] (a `wss://` target
    /// without it cannot be run: [`Target::check`]).
    pub tls: Option<TlsClient>,
}

impl Target {
    /// The TLS client for a `wss://` target (ignored for `ws://`).
    pub fn with_tls(mut self, tls: TlsClient) -> Target {
        if self.secure {
            self.tls = Some(tls);
        }
        self
    }
    /// The host without the port (for SNI and certificate checks).
    pub fn hostname(&self) -> &str {
        match self.host.rfind(':') {
            Some(i) if !self.host[i..].contains(']') => &self.host[..i],
            _ => &self.host,
        }
    }
    pub fn url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.host, self.path)
    }
    /// Loopback only, and a `wss://` target has its TLS client.
    pub fn check(&self) -> crate::Result<()> {
        net::check_loopback(&self.addr)?;
        if self.secure && self.tls.is_none() {
            return Err(format!(
                "{}: wss:// needs --ca FILE or --insecure",
                self.url()
            ));
        }
        Ok(())
    }
}

pub fn parse_url(url: &str) -> crate::Result<Target> {
    let (secure, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(format!(
            "{url}: expected ws://IP:PORT/path or wss://IP:PORT/path"
        ));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = net::parse_addr(hostport)?;
    Ok(Target {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
        secure,
        tls: None,
    })
}

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh random `Sec-WebSocket-Key`.
pub fn new_key(rng: &mut net::Rng) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The upgrade request bytes.
pub fn handshake_request(t: &Target, key: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsgate-load\r\n{}\r\n",
        t.path, t.host, key, extra_headers
    )
    .into_bytes()
}

/// A prepared handshake: request bytes and the accept value they must produce. One per
/// thread is enough (the same key on many connections is legal and saves a SHA-1 each).
#[derive(Clone, Debug)]
pub struct Handshake {
    pub request: Vec<u8>,
    pub accept: String,
    /// The target's TLS client: connections made with this handshake speak `wss://`.
    pub tls: Option<TlsClient>,
}

impl Handshake {
    pub fn new(t: &Target, rng: &mut net::Rng) -> Handshake {
        let key = new_key(rng);
        Handshake {
            request: handshake_request(t, &key, ""),
            accept: accept_key(&key),
            tls: t.tls.clone(),
        }
    }
}

pub enum HsResponse {
    Incomplete,
    /// 101 with the right accept; `consumed` header bytes (frames may follow).
    Accepted {
        consumed: usize,
    },
    /// Any other status.
    Rejected {
        status: u16,
    },
    Bad(&'static str),
}

pub fn parse_response(buf: &[u8], accept: &str) -> HsResponse {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(buf) {
        Ok(httparse::Status::Partial) => HsResponse::Incomplete,
        Err(_) => HsResponse::Bad("malformed handshake response"),
        Ok(httparse::Status::Complete(n)) => {
            let status = r.code.unwrap_or(0);
            if status != 101 {
                return HsResponse::Rejected { status };
            }
            let ok = r.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == accept.as_bytes()
            });
            if ok {
                HsResponse::Accepted { consumed: n }
            } else {
                HsResponse::Bad("wrong Sec-WebSocket-Accept")
            }
        }
    }
}

/// XORs `buf` with the 4-byte mask, 8 bytes at a time.
#[inline]
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().unwrap()) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends one masked client frame.
#[inline]
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: u32) {
    let b0 = if fin { 0x80 } else { 0 } | (opcode & 0x0f);
    let len = payload.len();
    if len < 126 {
        out.extend_from_slice(&[b0, 0x80 | len as u8]);
    } else if len <= 0xffff {
        out.extend_from_slice(&[b0, 0x80 | 126, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[b0, 0x80 | 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = mask.to_ne_bytes();
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// Appends an unmasked server frame (used by the test fixtures and `floor`).
pub fn encode_server_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let len = payload.len();
    if len < 126 {
        out.extend_from_slice(&[0x80 | opcode, len as u8]);
    } else if len <= 0xffff {
        out.extend_from_slice(&[0x80 | opcode, 126, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x80 | opcode, 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub header_len: usize,
    pub payload_len: usize,
}

/// Decodes a frame header; Ok(None) when more bytes are needed.
#[inline]
pub fn decode_header(buf: &[u8]) -> Result<Option<FrameHeader>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err("reserved bits set");
    }
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (len, mut hl) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (
                u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                10,
            )
        }
        n => (n as usize, 2),
    };
    let mask = if masked {
        if buf.len() < hl + 4 {
            return Ok(None);
        }
        let m = [buf[hl], buf[hl + 1], buf[hl + 2], buf[hl + 3]];
        hl += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin: b0 & 0x80 != 0,
        opcode,
        mask,
        header_len: hl,
        payload_len: len,
    }))
}

/// A message or control frame from the server.
pub enum Msg<'a> {
    /// A whole data message (text or binary), reassembled if it was fragmented.
    Data {
        opcode: u8,
        payload: &'a [u8],
    },
    Ping(&'a [u8]),
    Pong,
    Close {
        code: Option<u16>,
    },
}

/// Frame reader for one client connection: a stash for partial frames and a buffer for
/// fragmented messages (both empty and unallocated until needed).
#[derive(Default)]
pub struct Reader {
    stash: Vec<u8>,
    frag: Vec<u8>,
    frag_op: u8,
    in_frag: bool,
}

impl Reader {
    /// Feeds bytes, calling `f` for every message and control frame.
    pub fn feed(&mut self, data: &[u8], f: &mut dyn FnMut(Msg<'_>)) -> Result<(), &'static str> {
        let frag = &mut self.frag;
        let frag_op = &mut self.frag_op;
        let in_frag = &mut self.in_frag;
        net::with_stash(&mut self.stash, data, |buf| {
            parse_frames(buf, frag, frag_op, in_frag, f)
        })
    }
}

fn parse_frames(
    buf: &[u8],
    frag: &mut Vec<u8>,
    frag_op: &mut u8,
    in_frag: &mut bool,
    f: &mut dyn FnMut(Msg<'_>),
) -> Result<usize, &'static str> {
    let mut pos = 0;
    loop {
        let h = match decode_header(&buf[pos..])? {
            Some(h) => h,
            None => return Ok(pos),
        };
        if h.mask.is_some() {
            return Err("masked frame from server");
        }
        let end = pos + h.header_len + h.payload_len;
        if end > buf.len() {
            return Ok(pos);
        }
        let p = &buf[pos + h.header_len..end];
        pos = end;
        match h.opcode {
            OP_TEXT | OP_BINARY => {
                if *in_frag {
                    return Err("new message inside a fragmented one");
                }
                if h.fin {
                    f(Msg::Data {
                        opcode: h.opcode,
                        payload: p,
                    });
                } else {
                    *in_frag = true;
                    *frag_op = h.opcode;
                    frag.clear();
                    frag.extend_from_slice(p);
                }
            }
            OP_CONT => {
                if !*in_frag {
                    return Err("continuation without a message");
                }
                frag.extend_from_slice(p);
                if h.fin {
                    *in_frag = false;
                    f(Msg::Data {
                        opcode: *frag_op,
                        payload: frag,
                    });
                }
            }
            OP_PING => f(Msg::Ping(p)),
            OP_PONG => f(Msg::Pong),
            OP_CLOSE => {
                let code = if p.len() >= 2 {
                    Some(u16::from_be_bytes([p[0], p[1]]))
                } else {
                    None
                };
                f(Msg::Close { code });
            }
            _ => return Err("unknown opcode"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    Handshaking,
    Open,
    /// We sent a close frame and wait for the server's.
    Closing,
    Closed,
}

/// Why a connection ended or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    Connect,
    Rejected(u16),
    BadHandshake,
    /// The server closed (close frame or EOF) while we did not ask for it.
    ClosedByServer,
    Io,
    Protocol,
    /// The TLS handshake failed or a record was bad (certificate not trusted, alert).
    Tls,
}

/// What an event did to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// The 101 arrived (messages may have been delivered in the same step).
    Opened,
    /// The connection is finished; `None` when it was a clean close we started.
    Closed(Option<Fail>),
}

/// A non-blocking WebSocket client connection.
pub struct WsConn {
    /// The socket, plain or TLS (`wss://`: the handshake's TLS client).
    pub stream: Stream,
    pub state: State,
    pub out: OutBuf,
    pub reader: Reader,
    hs: Vec<u8>,
    /// rustls refused to start a connection (reported as [`Fail::Tls`] on the first event).
    tls_failed: bool,
}

impl WsConn {
    /// Wraps a stream whose connect was started; the upgrade request is queued (for
    /// `wss://`, inside TLS: rustls sends it once its handshake is done).
    pub fn new(stream: mio::net::TcpStream, hs: &Handshake) -> WsConn {
        let mut out = OutBuf::default();
        out.buf.extend_from_slice(&hs.request);
        let mut tls_failed = false;
        let stream = match &hs.tls {
            None => Stream::plain(stream),
            Some(t) => match t.connect() {
                Ok(c) => Stream::tls(stream, c),
                Err(_) => {
                    tls_failed = true;
                    Stream::plain(stream)
                }
            },
        };
        WsConn {
            stream,
            state: State::Connecting,
            out,
            reader: Reader::default(),
            hs: Vec::new(),
            tls_failed,
        }
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// The TCP socket alone, for a caller that drives it itself from here on (queued
    /// output, the frame reader and any TLS state are dropped: plain `ws://` only).
    pub fn into_stream(self) -> mio::net::TcpStream {
        self.stream.tcp
    }

    /// Queues a masked frame.
    #[inline]
    pub fn send(&mut self, opcode: u8, payload: &[u8], mask: u32) {
        encode_frame(&mut self.out.buf, true, opcode, payload, mask);
    }

    /// Queues a close frame (code 1000) and moves to Closing.
    pub fn start_close(&mut self, mask: u32) {
        if matches!(self.state, State::Open) {
            self.send(OP_CLOSE, &1000u16.to_be_bytes(), mask);
            self.state = State::Closing;
        }
    }

    pub fn flush(&mut self) -> Result<(), Fail> {
        if self.state == State::Connecting || self.state == State::Closed {
            return Ok(());
        }
        self.out.flush(&mut self.stream).map_err(|_| Fail::Io)?;
        // TLS records rustls still holds (the socket took only part of them).
        self.stream.flush_tls().map(|_| ()).map_err(|_| Fail::Io)
    }

    /// Handles a readiness event: completes the connect, writes the handshake, reads the
    /// 101 and frames, answers pings and closes, and passes data messages (and pongs) to
    /// `on_msg` together with the output buffer. Writes what is queued, once, at the end.
    pub fn handle(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        hs: &Handshake,
        mask: u32,
        on_msg: &mut dyn FnMut(&mut OutBuf, Msg<'_>),
    ) -> Step {
        let mut step = Step::Nothing;
        if self.tls_failed {
            return self.fail(Fail::Tls);
        }
        if self.state == State::Connecting {
            if !(writable || readable) {
                return Step::Nothing;
            }
            match net::connected(&self.stream.tcp) {
                Ok(true) => self.state = State::Handshaking,
                Ok(false) => return Step::Nothing,
                Err(_) => return self.fail(Fail::Connect),
            }
        }
        if readable {
            for _ in 0..64 {
                match net::read_once(&mut self.stream, scratch) {
                    ReadOutcome::Data { n, more } => {
                        match self.input(&scratch[..n], hs, mask, on_msg) {
                            Ok(Step::Nothing) => {}
                            Ok(s) => {
                                step = s;
                                if let Step::Closed(_) = s {
                                    return s;
                                }
                            }
                            Err(f) => return self.fail(f),
                        }
                        if !more {
                            break;
                        }
                    }
                    ReadOutcome::WouldBlock => break,
                    ReadOutcome::Err(e)
                        if self.stream.is_tls() && e.kind() == std::io::ErrorKind::InvalidData =>
                    {
                        return self.fail(Fail::Tls);
                    }
                    ReadOutcome::Eof | ReadOutcome::Err(_) => {
                        return match self.state {
                            State::Closing => {
                                self.state = State::Closed;
                                Step::Closed(None)
                            }
                            State::Handshaking => self.fail(Fail::BadHandshake),
                            _ => self.fail(Fail::ClosedByServer),
                        };
                    }
                }
            }
        }
        if let Err(f) = self.flush() {
            return self.fail(f);
        }
        step
    }

    fn fail(&mut self, f: Fail) -> Step {
        self.state = State::Closed;
        Step::Closed(Some(f))
    }

    fn input(
        &mut self,
        data: &[u8],
        hs: &Handshake,
        mask: u32,
        on_msg: &mut dyn FnMut(&mut OutBuf, Msg<'_>),
    ) -> Result<Step, Fail> {
        let mut step = Step::Nothing;
        let mut data = data;
        if self.state == State::Handshaking {
            let owned;
            let buf: &[u8] = if self.hs.is_empty() {
                data
            } else {
                self.hs.extend_from_slice(data);
                owned = std::mem::take(&mut self.hs);
                &owned[..]
            };
            match parse_response(buf, &hs.accept) {
                HsResponse::Incomplete => {
                    if buf.len() > 16 * 1024 {
                        return Err(Fail::BadHandshake);
                    }
                    if self.hs.is_empty() {
                        self.hs.extend_from_slice(buf);
                    }
                    return Ok(Step::Nothing);
                }
                HsResponse::Rejected { status } => return Err(Fail::Rejected(status)),
                HsResponse::Bad(_) => return Err(Fail::BadHandshake),
                HsResponse::Accepted { consumed } => {
                    self.state = State::Open;
                    self.hs = Vec::new();
                    step = Step::Opened;
                    let rest = buf[consumed..].to_vec();
                    if rest.is_empty() {
                        return Ok(step);
                    }
                    return self.frames(&rest, mask, on_msg).map(|s| {
                        if s == Step::Nothing {
                            step
                        } else {
                            s
                        }
                    });
                }
            }
        }
        if self.state == State::Closed {
            data = &[];
        }
        self.frames(data, mask, on_msg)
            .map(|s| if s == Step::Nothing { step } else { s })
    }

    fn frames(
        &mut self,
        data: &[u8],
        mask: u32,
        on_msg: &mut dyn FnMut(&mut OutBuf, Msg<'_>),
    ) -> Result<Step, Fail> {
        let mut close: Option<Option<u16>> = None;
        let out = &mut self.out;
        self.reader
            .feed(data, &mut |m| match m {
                Msg::Ping(p) => {
                    encode_frame(&mut out.buf, true, OP_PONG, p, mask);
                }
                Msg::Close { code } => {
                    if close.is_none() {
                        close = Some(code);
                    }
                }
                other => {
                    if close.is_none() {
                        on_msg(out, other)
                    }
                }
            })
            .map_err(|_| Fail::Protocol)?;
        if close.is_some() {
            let was_closing = self.state == State::Closing;
            if !was_closing {
                encode_frame(
                    &mut self.out.buf,
                    true,
                    OP_CLOSE,
                    &1000u16.to_be_bytes(),
                    mask,
                );
                let _ = self.out.flush(&mut self.stream);
            }
            self.state = State::Closed;
            return Ok(Step::Closed(if was_closing {
                None
            } else {
                Some(Fail::ClosedByServer)
            }));
        }
        Ok(Step::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn mask_roundtrip_and_decode() {
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        encode_frame(&mut out, true, OP_TEXT, &payload, 0xdead_beef);
        let h = decode_header(&out).unwrap().unwrap();
        assert_eq!(h.payload_len, 300);
        assert_eq!(h.header_len, 8);
        let mut p = out[h.header_len..].to_vec();
        apply_mask(&mut p, h.mask.unwrap());
        assert_eq!(p, payload);
    }

    #[test]
    fn reader_reassembles_and_splits() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&[0x01, 3]);
        wire.extend_from_slice(b"abc");
        wire.extend_from_slice(&[0x80, 2]);
        wire.extend_from_slice(b"de");
        encode_server_frame(&mut wire, OP_PING, b"p");
        encode_server_frame(&mut wire, OP_TEXT, &[b'x'; 200]);
        let mut r = Reader::default();
        let mut got: Vec<String> = Vec::new();
        for chunk in wire.chunks(3) {
            r.feed(chunk, &mut |m| match m {
                Msg::Data { payload, .. } => {
                    got.push(String::from_utf8_lossy(payload).into_owned())
                }
                Msg::Ping(_) => got.push("ping".into()),
                _ => {}
            })
            .unwrap();
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "abcde");
        assert_eq!(got[1], "ping");
        assert_eq!(got[2].len(), 200);
    }

    #[test]
    fn url() {
        let t = parse_url("ws://127.0.0.1:8080/prod").unwrap();
        assert_eq!(t.path, "/prod");
        assert_eq!(parse_url("ws://127.0.0.1:1").unwrap().path, "/");
        assert!(parse_url("ws://8.8.8.8:80/").is_err());
        let t = parse_url("wss://localhost:8443/prod").unwrap();
        assert!(t.secure);
        assert_eq!(t.hostname(), "localhost");
        assert_eq!(t.url(), "wss://localhost:8443/prod");
        assert!(t.check().is_err(), "wss without a TLS client");
        assert!(parse_url("http://127.0.0.1:1/").is_err());
    }
}
