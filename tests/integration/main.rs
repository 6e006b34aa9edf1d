//! Integration tests: the real `wsgate` binary driven over loopback (STYLE "Tests").
//! Every test starts its own gateway on `127.0.0.1:0`, so they run in parallel.

mod backend;
mod chat;
mod mgmt;
mod nats_fixture;
mod support;

mod access_log;
mod api_listener;
mod authorizer;
mod aws_chat;
mod backpressure;
mod client_addr;
mod closes;
mod cluster;
mod cluster_groups;
mod config;
mod cross_worker;
mod frames;
mod groups;
mod handshake;
mod http_connect;
mod http_disconnect;
mod http_events;
mod http_pool;
mod http_routes;
mod https_backend;
mod import;
mod import_models;
mod lambda;
mod limits;
mod management;
mod mgmt_hardening;
mod models;
mod pipeline;
mod properties;
mod review;
mod route_hardening;
mod routing;
mod sdk;
mod shutdown;
mod startup_ids;
mod throttling;
mod tls;
mod upstream_hardening;
mod workers;
