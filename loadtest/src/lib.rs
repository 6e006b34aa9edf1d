//! wsgate-load: the load generator and benchmark tools for wsgate.
//!
//! One module per subcommand (`rr`, `connect`, `idle`, `push`, `cluster_push`,
//! `group_send`, `backend`, `floor`,
//! `abuse`, which runs `rr` and `connect` next to its own abusers) on
//! shared pieces: `ws` (client handshake and frame codec), `http` (HTTP/1.1 request and
//! response framing), `net` (sockets, loopback checks, write buffers), `tls` (the `wss://` client:
//! rustls driven by the same loops, and test certificates), `stats`
//! (histograms, reports, progress lines) and `cpu` (CPU time and memory from `/proc`
//! and `getrusage`).
//!
//! Every tool runs one mio event loop per thread, talks to loopback addresses only and
//! is bounded by a duration. Buffers are per connection or per thread and reused: after
//! setup, a message costs no allocation.

pub mod abuse;
pub mod backend;
pub mod cluster_push;
pub mod connect;
pub mod cpu;
pub mod floor;
pub mod group_send;
pub mod http;
pub mod idle;
pub mod net;
pub mod push;
pub mod rr;
pub mod stats;
pub mod tls;
pub mod ws;

/// Error type of the tools: a message for the user.
pub type Error = String;
pub type Result<T> = std::result::Result<T, Error>;
