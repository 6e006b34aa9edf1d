//! The worker's HTTP/1.1 client for backends: per-backend keep-alive pools, one
//! request at a time per connection (or up to `pipeline` of them, SPEC §16), driven by the worker's own event loop (no thread
//! per request, no blocking call). The worker owns the sockets and the calls; this
//! module holds their state and the pure pieces (request writing, reply parsing).
//!
//! An `https://` backend's connection carries a rustls `ClientConnection` (sans-IO):
//! its handshake runs while the connection is still `Connecting` (the connect timeout
//! covers it), then requests are encrypted through it and replies decrypted into the
//! same `inbuf` and parser as plain ones, so every reply limit counts decrypted bytes.

pub mod pool;
pub mod response;
pub mod tls;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::config::Uri;

pub use pool::Pool;

/// Largest reply we accept from a backend: interim replies, head, chunk framing,
/// body and trailers together.
pub const MAX_REPLY_BYTES: usize = 10 * 1024 * 1024;

/// Largest reply buffer an idle connection keeps.
const MAX_IDLE_BUFFER_BYTES: usize = 64 * 1024;

/// Where an upstream connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Non-blocking connect in progress.
    Connecting,
    /// Connected, no call.
    Idle,
    /// Writing requests or reading their replies.
    Busy,
    /// Given up (failed, timed out, or not reusable); the pool's `Close` follows.
    Closing,
}

/// One connection to a backend.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    /// The TLS session of an `https://` backend (boxed: plain connections stay small).
    pub tls: Option<Box<rustls::ClientConnection>>,
    /// The TCP connect completed (a TLS handshake may still be running).
    connected: bool,
    pub pool: usize,
    pub state: State,
    /// The calls in flight, oldest first (their replies come in this order), each
    /// with where its request ends in the stream of bytes queued on the connection
    /// (see `queued`). More than one only with `pipeline > 1`.
    pub calls: VecDeque<(usize, u64)>,
    /// Request bytes queued on the connection so far (appended to `out`).
    pub queued: u64,
    /// Request bytes the socket (or, for TLS, the session) took so far.
    pub sent: u64,
    /// Requests appended this loop turn and not yet written: the worker writes them
    /// in one `write` per connection per turn (SPEC §16).
    pub out: Vec<u8>,
    /// Bytes of `out` already written.
    pub written: usize,
    /// The connection is on the worker's list of connections to write this turn.
    pub flush_listed: bool,
    /// Reply bytes received so far.
    pub inbuf: Vec<u8>,
    pub parser: response::Parser,
    /// Whether this connection served a request before (a failure before the first
    /// reply byte on such a connection may be retried once, SPEC §5).
    pub reused: bool,
    /// Generation, so a timer for an earlier life of this slot is ignored.
    pub generation: u32,
    /// The connect timeout's wheel entry while connecting (the worker cancels it).
    pub connect_timer: Option<crate::timer::Handle>,
}

impl Conn {
    /// Starts a non-blocking connect to `addr`, through TLS when `tls` is set.
    pub fn connect(
        addr: SocketAddr,
        pool: usize,
        generation: u32,
        tls: Option<&tls::Connector>,
    ) -> io::Result<Conn> {
        let tls = match tls {
            Some(c) => Some(Box::new(c.connect().map_err(io::Error::other)?)),
            None => None,
        };
        let stream = TcpStream::connect(addr)?;
        Ok(Conn {
            stream,
            tls,
            connected: false,
            pool,
            state: State::Connecting,
            calls: VecDeque::new(),
            queued: 0,
            sent: 0,
            out: Vec::new(),
            written: 0,
            flush_listed: false,
            inbuf: Vec::new(),
            parser: response::Parser::default(),
            reused: false,
            generation,
            connect_timer: None,
        })
    }

    /// After an event while connecting: whether the connection is ready for a
    /// request (TCP connected and, for TLS, the handshake done). A TLS failure (an
    /// untrusted certificate, a handshake error) is an error naming rustls's reason.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if !self.connected {
            if let Some(e) = self.stream.take_error()? {
                return Err(e);
            }
            match self.stream.peer_addr() {
                Ok(_) => {
                    let _ = self.stream.set_nodelay(true);
                    self.connected = true;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        match &mut self.tls {
            None => Ok(true),
            Some(tls) => handshake(tls, &mut self.stream),
        }
    }

    /// Queues call `call`'s request behind the ones already in flight; it goes out
    /// with the turn's other requests on this connection ([`Conn::write_out`]).
    pub fn push_request(&mut self, call: usize, request: &[u8]) {
        self.out.extend_from_slice(request);
        self.queued += request.len() as u64;
        self.calls.push_back((call, self.queued));
    }

    /// Writes what is left of the queued requests; `true` when all of it is written
    /// (for TLS: encrypted and handed to the socket). A buffer a large request grew
    /// is given back once written.
    pub fn write_out(&mut self) -> io::Result<bool> {
        let before = self.written;
        let done = match &mut self.tls {
            Some(tls) => write_tls_request(tls, &mut self.stream, &self.out, &mut self.written),
            None => write_plain(&mut self.stream, &self.out, &mut self.written),
        };
        self.sent += (self.written - before) as u64;
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > MAX_IDLE_BUFFER_BYTES {
                self.out = Vec::new();
            }
        }
        done
    }

    /// Reads everything available into `inbuf` through `scratch` (the worker's read
    /// buffer: no zeroed stack array per call); `true` at EOF. A short read ends the
    /// loop (the socket is drained) unless `read_closed` says a FIN is pending too.
    /// Reading also stops once `inbuf` holds `cap` bytes, so a backend that sends
    /// faster than we read cannot grow it without bound.
    pub fn read_available(
        &mut self,
        scratch: &mut [u8],
        read_closed: bool,
        cap: usize,
    ) -> io::Result<bool> {
        debug_assert!(!scratch.is_empty(), "an empty scratch would read as EOF");
        if let Some(tls) = &mut self.tls {
            return read_tls_available(tls, &mut self.stream, &mut self.inbuf, scratch, cap);
        }
        while self.inbuf.len() < cap {
            match self.stream.read(scratch) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() && !read_closed {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Whether the request that ends at `end` in the stream went out (none of it
    /// still waits in the TLS session's buffer). With later requests handed over
    /// too, what TLS still holds is taken to be theirs: a reply to this one says
    /// the backend read it, and a false "not sent" would close the connection
    /// under the calls behind it.
    pub fn request_sent(&self, end: u64) -> bool {
        self.sent > end || (self.sent == end && self.tls.as_ref().is_none_or(|t| !t.wants_write()))
    }

    /// Tells a TLS backend the connection ends (close_notify), if one non-blocking
    /// write can; the socket closes right after either way.
    pub fn close_notify(&mut self) {
        if let Some(tls) = &mut self.tls {
            if !tls.is_handshaking() {
                tls.send_close_notify();
                let _ = tls.write_tls(&mut self.stream);
            }
        }
    }

    /// The oldest call's reply is complete: the next one's reply follows. With no
    /// call left the connection is idle, and a buffer a large reply grew is given
    /// back by [`Conn::keep_inbuf`].
    pub fn reply_done(&mut self) {
        self.calls.pop_front();
        self.parser = response::Parser::default();
        self.reused = true;
        if self.calls.is_empty() {
            self.state = State::Idle;
        }
    }

    /// Puts the received bytes back after parsing (those before `parsed` were
    /// whole replies). An emptied buffer that a large reply grew is given back.
    pub fn keep_inbuf(&mut self, mut buf: Vec<u8>, parsed: usize) {
        buf.drain(..parsed);
        if buf.is_empty() && buf.capacity() > MAX_IDLE_BUFFER_BYTES {
            buf = Vec::new();
        }
        self.inbuf = buf;
    }
}

/// A rustls error as an I/O error (its text names the reason, e.g. an unknown
/// issuer), after trying once to send the alert rustls queued for the backend.
fn tls_failure(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    e: rustls::Error,
) -> io::Error {
    let _ = tls.write_tls(stream);
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// Writes `buf` from `*written` on to a plain socket; `true` when all is written.
fn write_plain(stream: &mut TcpStream, buf: &[u8], written: &mut usize) -> io::Result<bool> {
    while *written < buf.len() {
        match stream.write(&buf[*written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Writes what the TLS session has queued; `true` when nothing is left.
fn flush_tls(tls: &mut rustls::ClientConnection, stream: &mut TcpStream) -> io::Result<bool> {
    crate::tls::write_records(tls, stream)
}

/// Drives a TLS handshake as far as the socket allows; `true` once it is done.
/// Each turn either returns or consumes bytes the backend sent, and rustls bounds
/// handshake messages, so a backend cannot keep the loop going for free.
fn handshake(tls: &mut rustls::ClientConnection, stream: &mut TcpStream) -> io::Result<bool> {
    loop {
        flush_tls(tls, stream)?;
        if !tls.is_handshaking() {
            // Bytes still queued (the client's Finished) go out before the request.
            return Ok(true);
        }
        if !tls.wants_read() {
            return Ok(false);
        }
        match tls.read_tls(stream) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS: the backend closed the connection during the handshake",
                ))
            }
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    return Err(tls_failure(tls, stream, e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`Conn::write_request`] through TLS: encrypts what rustls's buffer takes, sends
/// it, and again, so at most one buffer of ciphertext is held however big the
/// request. `written` counts plaintext bytes handed to rustls.
fn write_tls_request(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    request: &[u8],
    written: &mut usize,
) -> io::Result<bool> {
    loop {
        if !flush_tls(tls, stream)? {
            return Ok(false);
        }
        if *written >= request.len() {
            return Ok(true);
        }
        let n = tls.writer().write(&request[*written..])?;
        if n == 0 && !tls.wants_write() {
            // Not expected after a full flush; an error beats a stalled call.
            return Err(io::Error::other("TLS: the session took no request bytes"));
        }
        *written += n;
    }
}

/// [`Conn::read_available`] through TLS: decrypted bytes go to `inbuf` until `cap`
/// of them are there; `true` at EOF (close_notify, or the socket closing without
/// it: the reply's own framing then decides whether it is whole).
fn read_tls_available(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    inbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    cap: usize,
) -> io::Result<bool> {
    while inbuf.len() < cap {
        // Plaintext rustls already holds first: it never buffers more than one read.
        match tls.reader().read(scratch) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                inbuf.extend_from_slice(&scratch[..n]);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(e) => return Err(e),
        }
        match tls.read_tls(stream) {
            // EOF: rustls notes it, and the reader reports it after the plaintext.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Err(e) = tls.process_new_packets() {
            return Err(tls_failure(tls, stream, e));
        }
    }
    Ok(false)
}

/// Appends a `POST` request with `body` to `out`. `extra_headers` are complete
/// `Name: value\r\n` lines; `query` (already encoded) is appended to the URI's path.
pub fn write_request(
    out: &mut Vec<u8>,
    uri: &Uri,
    query: &[u8],
    content_type: &str,
    extra_headers: &[u8],
    body: &[u8],
) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(uri.path.as_bytes());
    if !query.is_empty() {
        out.push(if uri.path.contains('?') { b'&' } else { b'?' });
        out.extend_from_slice(query);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(uri.authority.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra_headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_host_length_and_body() {
        let uri = Uri {
            addr: "127.0.0.1:3000".parse().unwrap(),
            authority: "localhost:3000".into(),
            path: "/ws?x=1".into(),
        };
        let mut out = Vec::new();
        write_request(
            &mut out,
            &uri,
            b"room=2",
            "application/json",
            b"connectionId: A\r\n",
            b"{}",
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /ws?x=1&room=2 HTTP/1.1\r\nHost: localhost:3000\r\nContent-Type: application/json\r\nContent-Length: 2\r\nconnectionId: A\r\n\r\n{}"
        );
    }
}
