//! Frame codec benches at 16 B, 125 B, 4 KiB and 32 KiB payloads, `Throughput::Bytes`
//! of payload (STYLE.md "Benches").
//!
//! - `frame/decode_unmask`: one masked client text frame through
//!   [`wsgate::message::Reader::read`] (header decode, in-place unmask, UTF-8 check),
//!   compared with tungstenite 0.30 reading the same bytes.
//!   - `wsgate`: the measured closure first copies the masked frame into the input
//!     buffer, because `read` unmasks in place. The worker does the same copy when it
//!     reads from the socket into its read buffer. That copy is counted, not subtracted.
//!   - `wsgate_in_place`: `iter_batched_ref` hands each iteration a freshly masked copy
//!     made outside the timing, so this is `read` alone, without the copy.
//!   - `tungstenite`: `WebSocket::from_raw_socket(_, Role::Server, None)`, then
//!     `WebSocket::read`. Its socket is an in-memory stream that returns the same
//!     masked frame on every read, so each `read` takes one whole frame: a copy into
//!     tungstenite's `BytesMut`, header parse, unmask, and UTF-8 validation into
//!     `Message::Text`. `FrameCodec` is `pub(super)` in 0.30, and `FrameSocket::read`
//!     does not unmask, so the public `WebSocket` is the like-for-like entry point.
//!   - `tungstenite_4k_readbuf`: the same with `read_buffer_size(4096)`. Before each
//!     socket read, tungstenite zero-fills its whole read buffer (`FrameCodec::read_in`
//!     resizes it to capacity). With the default 128 KiB buffer that adds about 650 ns per
//!     read. With 4 KiB, small frames show its codec alone, but a 32 KiB frame then takes
//!     eight reads.
//! - `frame/unmask`: `mask::apply` (the word-at-a-time version) against
//!   `mask::apply_bytewise`, in place on the same buffer.
//! - `frame/encode`: `frame::write_message` of one unfragmented server text frame into a
//!   reused `Vec`, against tungstenite's `Frame::format` into a reused `Vec`.
//!
//! Measured with `cargo bench --bench frame -- --warm-up-time 1 --measurement-time 2`,
//! median of 4 or 5 runs, on 2 shared AMD EPYC vCPUs with load 3 to 6 from other builds,
//! so expect ±30 %. Decode wsgate / tungstenite: 16 B 35 ns / 763 ns (117 ns with a
//! 4 KiB read buffer); 125 B 43 ns / 773 ns; 4 KiB 350 ns / 982 ns; 32 KiB 2.4 µs / 4.8 µs.
//! Unmask at 32 KiB: `apply` 48 GB/s, `apply_bytewise` 3.7 GB/s. Encode at 16 B:
//! 9.5 ns / 16 ns.

use std::hint::black_box;
use std::io::{self, Read, Write};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::frame::coding::{Data, OpCode as TOpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::{Bytes, Message};
use wsgate::buf::Pool;
use wsgate::frame::{self, OpCode};
use wsgate::mask;
use wsgate::message::{Event, Limits, Reader};

const SIZES: [usize; 4] = [16, 125, 4 * 1024, 32 * 1024];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const LIMITS: Limits = Limits {
    max_frame_bytes: 64 * 1024,
    max_message_bytes: 64 * 1024,
    allow_binary: true,
};

/// ASCII JSON-ish text of exactly `n` bytes, the typical API Gateway payload.
fn text(n: usize) -> Vec<u8> {
    let pattern = br#"{"action":"sendmessage","data":{"room":"lobby","msg":"hello, world"}},"#;
    pattern.iter().copied().cycle().take(n).collect()
}

/// A masked, final client text frame carrying `payload`.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
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
    f.extend_from_slice(&KEY);
    let start = f.len();
    f.extend_from_slice(payload);
    mask::apply(&mut f[start..], KEY, 0);
    f
}

/// A socket that delivers `frame` over and over, at most one frame per `read`; writes
/// are discarded.
struct Replay {
    frame: Vec<u8>,
    pos: usize,
}

impl Read for Replay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.frame.len() - self.pos);
        buf[..n].copy_from_slice(&self.frame[self.pos..self.pos + n]);
        self.pos = (self.pos + n) % self.frame.len();
        Ok(n)
    }
}

impl Write for Replay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read_one(reader: &mut Reader, input: &mut [u8], pool: &mut Pool) -> usize {
    let mut asm = None;
    let (n, ev) = reader
        .read(input, &mut asm, pool, &LIMITS)
        .expect("valid frame");
    debug_assert!(matches!(ev, Some(Event::Message { .. })));
    black_box(ev);
    n
}

fn decode_unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/decode_unmask");
    for size in SIZES {
        let payload = text(size);
        let wire = masked_frame(&payload);
        g.throughput(Throughput::Bytes(size as u64));

        // Sanity: every contender decodes the frame to the original text.
        {
            let mut input = wire.clone();
            let (mut r, mut pool, mut asm) = (Reader::default(), Pool::new(1), None);
            match r.read(&mut input, &mut asm, &mut pool, &LIMITS) {
                Ok((
                    n,
                    Some(Event::Message {
                        payload: wsgate::message::Payload::Input(p),
                        ..
                    }),
                )) => {
                    assert_eq!(n, wire.len());
                    assert_eq!(&input[p], &payload[..]);
                }
                other => panic!("unexpected {other:?}"),
            }
            let mut ws = WebSocket::from_raw_socket(
                Replay {
                    frame: wire.clone(),
                    pos: 0,
                },
                Role::Server,
                None,
            );
            match ws.read().expect("tungstenite read") {
                Message::Text(t) => assert_eq!(t.as_bytes(), &payload[..]),
                other => panic!("unexpected {other:?}"),
            }
        }

        g.bench_with_input(BenchmarkId::new("wsgate", size), &wire, |b, wire| {
            let (mut r, mut pool) = (Reader::default(), Pool::new(1));
            let mut input = vec![0u8; wire.len()];
            b.iter(|| {
                input.copy_from_slice(black_box(wire));
                read_one(&mut r, &mut input, &mut pool)
            });
        });

        let batch = if size > 4096 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        g.bench_with_input(
            BenchmarkId::new("wsgate_in_place", size),
            &wire,
            |b, wire| {
                let (mut r, mut pool) = (Reader::default(), Pool::new(1));
                b.iter_batched_ref(
                    || wire.clone(),
                    |input| read_one(&mut r, input, &mut pool),
                    batch,
                );
            },
        );

        g.bench_with_input(BenchmarkId::new("tungstenite", size), &wire, |b, wire| {
            let mut ws = WebSocket::from_raw_socket(
                Replay {
                    frame: wire.clone(),
                    pos: 0,
                },
                Role::Server,
                None,
            );
            b.iter(|| black_box(ws.read().expect("tungstenite read")));
        });

        // tungstenite zero-fills its whole read buffer (128 KiB by default) before every
        // socket read, which dominates small frames; a 4 KiB buffer shows its codec alone.
        g.bench_with_input(
            BenchmarkId::new("tungstenite_4k_readbuf", size),
            &wire,
            |b, wire| {
                let conf = WebSocketConfig::default().read_buffer_size(4096);
                let mut ws = WebSocket::from_raw_socket(
                    Replay {
                        frame: wire.clone(),
                        pos: 0,
                    },
                    Role::Server,
                    Some(conf),
                );
                b.iter(|| black_box(ws.read().expect("tungstenite read")));
            },
        );
    }
    g.finish();
}

fn unmask(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/unmask");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = text(size);
        g.bench_function(BenchmarkId::new("apply", size), |b| {
            b.iter(|| mask::apply(black_box(&mut buf), black_box(KEY), 0))
        });
        g.bench_function(BenchmarkId::new("apply_bytewise", size), |b| {
            b.iter(|| mask::apply_bytewise(black_box(&mut buf), black_box(KEY), 0))
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let payload = text(size);
        let mut out = Vec::with_capacity(size + frame::MAX_HEADER_BYTES);
        g.bench_function(BenchmarkId::new("wsgate", size), |b| {
            b.iter(|| {
                out.clear();
                frame::write_message(
                    &mut out,
                    OpCode::Text,
                    black_box(&payload),
                    LIMITS.max_frame_bytes,
                );
                black_box(out.len())
            })
        });
        let bytes = Bytes::from(payload.clone());
        {
            // Sanity: both write the same unmasked server frame.
            let mut a = Vec::new();
            frame::write_message(&mut a, OpCode::Text, &payload, LIMITS.max_frame_bytes);
            let mut t = Vec::new();
            Frame::message(bytes.clone(), TOpCode::Data(Data::Text), true)
                .format(&mut t)
                .expect("write to Vec");
            assert_eq!(a, t);
        }
        g.bench_function(BenchmarkId::new("tungstenite", size), |b| {
            b.iter(|| {
                out.clear();
                let f = Frame::message(black_box(bytes.clone()), TOpCode::Data(Data::Text), true);
                f.format(&mut out).expect("write to Vec");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode_unmask, unmask, encode);
criterion_main!(benches);
