//! The management listener. For now it answers `GET /health` and 404s the rest; the
//! `@connections` API arrives with its own issue.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::handshake::write_status;

const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// One management HTTP connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Serves what arrived; `true` when the connection is finished.
    pub fn on_event(&mut self, workers: usize) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let mut out = Vec::new();
        match req.parse(&self.buf) {
            Ok(httparse::Status::Partial) if self.buf.len() < MAX_REQUEST_BYTES => return false,
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("/");
                if path == "/health" && req.method == Some("GET") {
                    let body = format!("{{\"status\":\"ok\",\"workers\":{workers}}}");
                    write_status(&mut out, 200, "OK", "", "application/json", body.as_bytes());
                } else {
                    write_status(
                        &mut out,
                        404,
                        "Not Found",
                        "x-amzn-ErrorType: NotFoundException\r\n",
                        "application/json",
                        b"{\"message\": \"Not Found\"}",
                    );
                }
            }
            _ => write_status(
                &mut out,
                400,
                "Bad Request",
                "",
                "text/plain",
                b"malformed request",
            ),
        }
        // A short answer on a fresh socket: one write is enough in practice; a refused
        // remainder only truncates this answer, and the connection closes either way.
        let _ = self.stream.write(&out);
        true
    }
}
