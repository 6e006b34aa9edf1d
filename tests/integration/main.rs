//! Integration tests: the real `wsgate` binary driven over loopback (STYLE "Tests").
//! Every test starts its own gateway on `127.0.0.1:0`, so they run in parallel.

mod support;

mod closes;
mod config;
mod frames;
mod handshake;
mod properties;
mod routing;
mod workers;
