//! The sans-IO heart of a client connection: bytes in, replies out. A [`Session`] owns
//! a connection's protocol state; [`Scratch`] is the worker's reusable state for the
//! message path (buffers, route selector, id sequence). The worker does the socket
//! I/O around them; tests and benches drive them directly.

use std::sync::Arc;

use crate::buf::Pool;
use crate::config::Config;
use crate::frame;
use crate::handshake;
use crate::id::{self, Sequence};
use crate::message::{self, Event, Kind, Payload, Reader};
use crate::reply;
use crate::route::Selector;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP open, upgrade request not complete yet.
    Handshaking,
    /// Upgraded: messages flow.
    Open,
    /// We sent a close frame and wait for the client's, or for EOF.
    Closing,
    /// Nothing more is read; the socket closes once pending output is written.
    Done,
}

/// One connection's protocol state. Holds buffers only while it needs them.
#[derive(Debug)]
pub struct Session {
    pub state: State,
    pub id: id::Text,
    pub reader: Reader,
    /// Bytes received but not yet usable (a partial request head or frame header).
    pub inbuf: Option<Vec<u8>>,
    /// A message being assembled from several frames or reads.
    pub asm: Option<Vec<u8>>,
    /// A pong arrived since the last server ping.
    pub pong_seen: bool,
}

/// Per-worker state of the message path, reused for every message.
pub struct Scratch {
    pub config: Arc<Config>,
    pub pool: Pool,
    /// Output for the connection being served, written to its socket in one go.
    pub wbuf: Vec<u8>,
    /// A rendered reply too large for one frame, before fragmentation.
    pub render: Vec<u8>,
    pub selector: Selector,
    pub seq: Sequence,
    pub limits: message::Limits,
}

impl Scratch {
    pub fn new(config: Arc<Config>, worker: u8, epoch: u32, pool_keep: usize) -> Scratch {
        let l = &config.limits;
        let limits = message::Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_message_bytes: l.max_message_bytes,
            allow_binary: l.allow_binary,
        };
        Scratch {
            config,
            pool: Pool::new(pool_keep),
            wbuf: Vec::with_capacity(64 * 1024),
            render: Vec::new(),
            selector: Selector::new(),
            seq: Sequence::new(worker, epoch),
            limits,
        }
    }
}

impl Session {
    pub fn new(id: id::Text) -> Session {
        Session {
            state: State::Handshaking,
            id,
            reader: Reader::default(),
            inbuf: None,
            asm: None,
            pong_seen: false,
        }
    }

    /// Processes newly received bytes (after any stashed ones). Replies are appended
    /// to `sx.wbuf`; bytes that cannot be used yet are stashed in `self.inbuf`.
    pub fn process(&mut self, input: &mut [u8], sx: &mut Scratch) {
        let mut pos = 0;
        if self.state == State::Handshaking {
            match handshake::parse(input, &sx.config.api.stage) {
                Ok(None) => {
                    self.stash(input, &mut sx.pool);
                    return;
                }
                Err(rejection) => {
                    log::debug!("handshake rejected with {}", rejection.status());
                    rejection.write_response(&mut sx.wbuf);
                    self.state = State::Done;
                    return;
                }
                Ok(Some(up)) => {
                    if let Some(route) = sx.config.connect_route {
                        let request_id = sx.seq.next_id();
                        let ids = reply::Ids {
                            connection: &self.id,
                            request: &request_id,
                            message: b"",
                        };
                        if !reply::mock_connect(&mut sx.wbuf, &sx.config, route, &ids) {
                            self.state = State::Done;
                            return;
                        }
                    }
                    handshake::write_accept(&mut sx.wbuf, &up.accept, None);
                    pos = up.head_len;
                    self.state = State::Open;
                }
            }
        }
        while pos < input.len() && matches!(self.state, State::Open | State::Closing) {
            let res = self
                .reader
                .read(&mut input[pos..], &mut self.asm, &mut sx.pool, &sx.limits);
            let base = pos;
            match res {
                Ok((n, None)) => {
                    pos += n;
                    self.stash(&input[pos..], &mut sx.pool);
                    return;
                }
                Ok((n, Some(ev))) => {
                    pos += n;
                    if self.state == State::Closing {
                        // Waiting for the client's close: everything else is dropped.
                        if matches!(ev, Event::Close { .. }) {
                            self.state = State::Done;
                        }
                        self.release_message(&ev, &mut sx.pool);
                        continue;
                    }
                    self.on_event(&input[base..pos], ev, sx);
                }
                Err(e) => {
                    if self.state == State::Open {
                        log::debug!("closing with {}: {}", e.close_code(), e.reason());
                        frame::write_close(&mut sx.wbuf, Some(e.close_code()), e.reason());
                        self.state = State::Closing;
                    } else {
                        self.state = State::Done;
                    }
                    return;
                }
            }
        }
    }

    fn release_message(&mut self, ev: &Event, pool: &mut Pool) {
        if let Event::Message {
            payload: Payload::Assembled,
            ..
        } = ev
        {
            if let Some(b) = self.asm.take() {
                pool.give(b);
            }
        }
    }

    fn stash(&mut self, rest: &[u8], pool: &mut Pool) {
        if !rest.is_empty() {
            let mut b = pool.take();
            b.extend_from_slice(rest);
            self.inbuf = Some(b);
        }
    }

    /// One event of an open connection; `input` is what the event's ranges index.
    fn on_event(&mut self, input: &[u8], ev: Event, sx: &mut Scratch) {
        match ev {
            Event::Message {
                kind,
                payload: Payload::Input(r),
            } => self.on_message(kind, &input[r], sx),
            Event::Message {
                kind,
                payload: Payload::Assembled,
            } => {
                let msg = self.asm.take().unwrap_or_default();
                self.on_message(kind, &msg, sx);
                sx.pool.give(msg);
            }
            Event::Ping(r) => {
                frame::write_message(&mut sx.wbuf, frame::OpCode::Pong, &input[r], 125)
            }
            Event::Pong(_) => self.pong_seen = true,
            Event::Close { code, reason } => {
                let reason = std::str::from_utf8(&input[reason]).unwrap_or("");
                frame::write_close(&mut sx.wbuf, code, reason);
                self.state = State::Done;
            }
        }
    }

    /// Routes one data message and answers it.
    fn on_message(&mut self, kind: Kind, body: &[u8], sx: &mut Scratch) {
        let config = &sx.config;
        let route = match kind {
            Kind::Text => sx.selector.select(&config.table, body),
            Kind::Binary => config.default_route,
        };
        let request_id = sx.seq.next_id();
        let Some(route) = route else {
            reply::error_frame(&mut sx.wbuf, "Forbidden", &self.id, &request_id);
            return;
        };
        let message_id = sx.seq.next_id();
        let ids = reply::Ids {
            connection: &self.id,
            request: &request_id,
            message: &message_id,
        };
        reply::mock_route(
            &mut sx.wbuf,
            &mut sx.render,
            config,
            route,
            kind,
            body,
            &ids,
        );
    }

    /// Returns every borrowed buffer to the pool.
    pub fn release(&mut self, pool: &mut Pool) {
        for b in [self.inbuf.take(), self.asm.take()].into_iter().flatten() {
            pool.give(b);
        }
    }
}
