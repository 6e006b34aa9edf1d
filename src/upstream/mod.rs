//! The worker's HTTP/1.1 client for backends: per-backend keep-alive pools, one
//! request at a time per connection, driven by the worker's own event loop (no thread
//! per request, no blocking call). The worker owns the sockets and the calls; this
//! module holds their state and the pure pieces (request writing, reply parsing).

pub mod pool;
pub mod response;

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
    /// Writing a request or reading its reply.
    Busy,
    /// Given up (failed, timed out, or not reusable); the pool's `Close` follows.
    Closing,
}

/// One connection to a backend.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub pool: usize,
    pub state: State,
    /// The call being served (call slab key).
    pub call: Option<usize>,
    /// Bytes of the call's request already written.
    pub written: usize,
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
    pub fn connect(addr: SocketAddr, pool: usize, generation: u32) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        Ok(Conn {
            stream,
            pool,
            state: State::Connecting,
            call: None,
            written: 0,
            inbuf: Vec::new(),
            parser: response::Parser::default(),
            reused: false,
            generation,
            connect_timer: None,
        })
    }

    /// After a writable event while connecting: whether the connect succeeded.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                let _ = self.stream.set_nodelay(true);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes what is left of `request`; `true` when all of it is written.
    pub fn write_request(&mut self, request: &[u8]) -> io::Result<bool> {
        while self.written < request.len() {
            match self.stream.write(&request[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
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

    /// Ready for the next request on the same connection. A buffer a large reply
    /// grew is given back, so idle connections hold little memory.
    pub fn reset(&mut self) {
        self.call = None;
        self.written = 0;
        self.inbuf.clear();
        if self.inbuf.capacity() > MAX_IDLE_BUFFER_BYTES {
            self.inbuf = Vec::new();
        }
        self.parser = response::Parser::default();
        self.reused = true;
        self.state = State::Idle;
    }
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
