//! wsgate: a WebSocket API gateway with the contract of Amazon API Gateway's WebSocket
//! APIs, as one thread-per-core binary. The README's Architecture section walks the
//! path of a message through these modules.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod access_log;
pub mod authorizer;
pub mod aws;
pub mod buf;
pub mod close;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod event;
pub mod forwarded;
pub mod frame;
#[cfg(test)]
mod fuzz_corpus;
pub mod groups;
pub mod handshake;
pub mod http1;
pub mod id;
pub mod import;
pub mod integration;
pub mod json;
pub mod logger;
pub mod mailbox;
pub mod management;
pub mod mapping;
pub mod mask;
pub mod message;
pub mod metrics;
pub mod mock;
pub mod model;
pub mod percent;
pub mod proxy_protocol;
pub mod reply;
pub mod route;
pub mod runtime;
pub mod session;
pub mod sigv4;
pub mod throttle;
pub mod time;
pub mod timer;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod worker;
