//! `wsgate-load`: load generator for wsgate. See `wsgate-load --help` and loadtest/README.md.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::time::Duration;
use wsgate_load::{
    abuse, backend, cluster_push, connect, floor, group_send, idle, net, push, rr, tls, ws,
};

#[derive(Parser)]
#[command(
    name = "wsgate-load",
    version,
    about = "Load generator and benchmark tools for wsgate (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// How long to run (seconds, fractions allowed).
    #[arg(long, default_value = "10", value_parser = secs)]
    duration: Duration,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress line (it is shown only on a terminal anyway).
    #[arg(long)]
    quiet: bool,
}

/// What `push` and `cluster-push` share: the management side and the traffic.
#[derive(clap::Args, Clone)]
struct PushArgs {
    /// Management API address (IP:PORT or http://IP:PORT).
    #[arg(long, default_value = "127.0.0.1:9001")]
    mgmt: String,
    /// Path prefix before /@connections (e.g. /prod).
    #[arg(long, default_value = "")]
    mgmt_prefix: String,
    /// WebSocket clients.
    #[arg(short = 'c', long, default_value_t = 1000)]
    clients: usize,
    /// Keep-alive management connections (one POST in flight each).
    #[arg(long, default_value_t = 16)]
    mgmt_conns: usize,
    /// Total pushes per second (open loop); default flat out.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Route key whose mock template is $context.connectionId.
    #[arg(long, default_value = "whoami")]
    id_action: String,
    /// Seconds to wait for outstanding pushes after the duration.
    #[arg(long, default_value = "2", value_parser = secs)]
    drain: Duration,
}

impl PushArgs {
    /// Fills `o` (made with the target and management addresses) from the flags.
    fn apply(self, o: &mut push::PushOpts, common: &Common) {
        o.mgmt_prefix = self.mgmt_prefix;
        o.clients = self.clients;
        o.mgmt_conns = self.mgmt_conns;
        o.threads = common.threads;
        o.duration = common.duration;
        o.rate = self.rate;
        o.payload = self.payload;
        o.id_action = self.id_action;
        o.drain = self.drain;
        o.progress = !common.quiet;
    }
}

/// TLS client options for `wss://` URLs (ignored for `ws://`).
#[derive(clap::Args, Clone)]
struct TlsArgs {
    /// Trust the certificates in this PEM file (a CA, e.g. `wsgate-load cert`'s ca.pem).
    #[arg(long, value_name = "FILE")]
    ca: Option<String>,
    /// Accept any server certificate (load generation against test setups only).
    #[arg(long, conflicts_with = "ca")]
    insecure: bool,
    /// Resume TLS sessions (tickets kept per process); default: every handshake is full.
    #[arg(long)]
    tls_resume: bool,
    /// TLS versions offered.
    #[arg(long, value_enum, default_value_t = TlsVersionArg::V13)]
    tls_version: TlsVersionArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum TlsVersionArg {
    #[value(name = "1.3")]
    V13,
    #[value(name = "1.2")]
    V12,
    Any,
}

/// Parses a URL; a `wss://` one gets its TLS client from the options.
fn target(url: &str, t: &TlsArgs) -> wsgate_load::Result<ws::Target> {
    let target = ws::parse_url(url)?;
    if !target.secure {
        return Ok(target);
    }
    let trust = match (&t.ca, t.insecure) {
        (Some(f), _) => tls::Trust::CaFile(f.clone()),
        (None, true) => tls::Trust::Insecure,
        (None, false) => return Err(format!("{url}: wss:// needs --ca FILE or --insecure")),
    };
    let versions = match t.tls_version {
        TlsVersionArg::V13 => tls::Versions::Tls13,
        TlsVersionArg::V12 => tls::Versions::Tls12,
        TlsVersionArg::Any => tls::Versions::Both,
    };
    let client = tls::TlsClient::new(target.hostname(), &trust, versions, t.tls_resume)?;
    Ok(target.with_tls(client))
}

fn secs(s: &str) -> Result<Duration, String> {
    let s = s.trim_end_matches('s');
    let v: f64 = s.parse().map_err(|_| format!("{s}: expected seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err("duration must be between 0 and 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

#[derive(Subcommand)]
enum Cmd {
    /// Request/reply through a route (mock echo or aws_proxy with `backend --reply event-body`).
    Rr {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        url: String,
        /// Connections.
        #[arg(short = 'c', long, default_value_t = 16)]
        connections: usize,
        /// Message size in bytes (JSON text).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Value of the message's "action" field (the route key).
        #[arg(long, default_value = "echo")]
        action: String,
        /// Open loop: total messages per second (latency corrected for coordinated omission).
        #[arg(long)]
        rate: Option<f64>,
        /// Messages in flight per connection.
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        /// A reply later than this (seconds) is a timeout.
        #[arg(long, default_value = "2", value_parser = secs)]
        timeout: Duration,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Handshake storm: connect, upgrade, close, repeat.
    Connect {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        url: String,
        /// Handshakes in progress at once.
        #[arg(short = 'c', long, default_value_t = 64)]
        connections: usize,
        /// Loopback source addresses to rotate through (127.0.0.1, .2, ...).
        #[arg(long, default_value_t = 1)]
        sources: usize,
        /// clean: close handshake, server closes TCP first; rst: abort with RST.
        #[arg(long, value_enum, default_value_t = CloseArg::Clean)]
        close: CloseArg,
        #[arg(long, default_value = "5", value_parser = secs)]
        timeout: Duration,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Hold N idle connections from several source addresses; report gateway RSS per connection.
    Idle {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        url: String,
        /// Connections to hold (at most this process's open-file limit; use several processes for more).
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Loopback source addresses (127.0.0.1, 127.0.0.2, ...).
        #[arg(long, default_value_t = 4)]
        sources: usize,
        /// Index of the first source address (0 = 127.0.0.1): give each process its own.
        #[arg(long, default_value_t = 0)]
        source_offset: usize,
        /// Handshakes in flight while connecting.
        #[arg(long, default_value_t = 256)]
        concurrency: usize,
        /// The gateway's pid, to read its RSS before and after.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// Print `held N` on stdout once everything is open (for scripts).
        #[arg(long)]
        announce: bool,
        #[command(flatten)]
        tls: TlsArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Push through POST /@connections/{id} and check every push arrives exactly once.
    Push {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        url: String,
        #[command(flatten)]
        push: PushArgs,
        #[command(flatten)]
        common: Common,
    },
    /// `push` with clients spread over several gateway nodes and every push posted to
    /// one management URL (a node owning none of them: each push crosses NATS). One
    /// `--gateway` makes it the same-node push row.
    ClusterPush {
        /// Gateway nodes' client URLs, comma-separated (clients round robin over them).
        #[arg(long, default_value = "ws://127.0.0.1:8080/", value_delimiter = ',')]
        gateway: Vec<String>,
        #[command(flatten)]
        push: PushArgs,
        /// Gateway (and NATS) pids, comma-separated: their CPU per push is reported.
        #[arg(long, value_delimiter = ',')]
        gateway_pid: Vec<u32>,
        #[command(flatten)]
        common: Common,
    },
    /// Group sends: members join one group (PUT /@groups/{g}/{id}), senders post
    /// POST /@groups/{g} in a loop; deliveries/s and exactly-once per member.
    GroupSend {
        /// Gateway nodes' client URLs, comma-separated (members round robin over them).
        #[arg(long, default_value = "ws://127.0.0.1:8080/", value_delimiter = ',')]
        gateway: Vec<String>,
        #[arg(long, default_value = "127.0.0.1:9001")]
        mgmt: String,
        /// Path prefix before /@groups (e.g. /prod).
        #[arg(long, default_value = "")]
        mgmt_prefix: String,
        #[arg(long, default_value = "bench")]
        group: String,
        /// Group members (WebSocket clients).
        #[arg(short = 'c', long, default_value_t = 1000)]
        members: usize,
        /// Sender connections (one send in flight each).
        #[arg(long, default_value_t = 4)]
        senders: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value = "whoami")]
        id_action: String,
        #[arg(long, default_value = "2", value_parser = secs)]
        drain: Duration,
        /// Do not join (members in no group: the baseline for --hold).
        #[arg(long)]
        no_join: bool,
        /// After the joins print `held N` and keep the members idle this long (seconds)
        /// before sending, for an RSS reading of connections in a group.
        #[arg(long, default_value = "0", value_parser = secs)]
        hold: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// A fast HTTP/1.1 keep-alive backend (for aws_proxy/http_proxy integrations).
    Backend {
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
        /// fixed: --body; echo: the request body; event-body: the event's "body" field.
        #[arg(long, value_enum, default_value_t = ReplyArg::EventBody)]
        reply: ReplyArg,
        #[arg(long, default_value = "{\"ok\":true}")]
        body: String,
        #[arg(long, default_value_t = 200)]
        status: u16,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Chunked replies (two chunks).
        #[arg(long)]
        chunked: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Soak: normal rr traffic next to slow readers, never-reading management clients,
    /// connection churn and big-number messages; checks the gateway's RSS comes back.
    /// Exit 1 when normal traffic saw a fault or RSS after the settle > before + slack.
    Abuse {
        #[arg(long, default_value = "ws://127.0.0.1:8080/")]
        url: String,
        /// Normal traffic: connections (closed loop, one message in flight each).
        #[arg(short = 'c', long, default_value_t = 8)]
        connections: usize,
        /// Normal traffic: message size in bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Normal traffic: the route key (no such route: `$default` answers).
        #[arg(long, default_value = "echo")]
        action: String,
        /// Normal traffic: a reply later than this (seconds) is a timeout, a fault.
        #[arg(long, default_value = "2", value_parser = secs)]
        timeout: Duration,
        /// Normal traffic alone before the abuse (seconds).
        #[arg(long, default_value = "2", value_parser = secs)]
        warmup: Duration,
        /// Normal traffic alone after the abuse, before the final RSS reading (seconds).
        #[arg(long, default_value = "5", value_parser = secs)]
        settle: Duration,
        /// The gateway's pid: its VmRSS is read from /proc/PID/status.
        #[arg(long)]
        gateway_pid: Option<u32>,
        /// Allowed RSS growth from before the abuse to after the settle (MiB).
        #[arg(long, default_value_t = 16)]
        rss_slack_mb: u64,
        /// Stop the abuse early when the gateway's RSS passes this (MiB; 0 = never).
        #[arg(long, default_value_t = 2048)]
        rss_abort_mb: u64,
        /// Slow readers: clients sending 1 KB messages flat out, never reading (0 = off).
        #[arg(long, default_value_t = 2)]
        slow_readers: usize,
        /// Slow readers' message size in bytes.
        #[arg(long, default_value_t = 1024)]
        slow_bytes: usize,
        /// Messages per second per slow reader (default flat out).
        #[arg(long)]
        slow_rate: Option<f64>,
        /// Management API (http://IP:PORT): never-reading clients pipelining GET /metrics.
        #[arg(long)]
        management: Option<String>,
        /// Management token: half the clients send it, half a wrong one.
        #[arg(long)]
        management_token: Option<String>,
        /// Never-reading management clients (0 = off; needs --management).
        #[arg(long, default_value_t = 2)]
        mgmt_clients: usize,
        /// Requests per second per management client (default flat out).
        #[arg(long)]
        mgmt_rate: Option<f64>,
        /// Connection churn: handshakes in flight, each connect, upgrade, close (0 = off).
        #[arg(long, default_value_t = 4)]
        churn: usize,
        /// Clients sending {"action":[0,0,…]} messages one after another (0 = off).
        #[arg(long, default_value_t = 2)]
        bignum_clients: usize,
        /// Size of a big-number message in bytes.
        #[arg(long, default_value_t = 128_000)]
        bignum_bytes: usize,
        /// Fragment size of a big-number message in bytes.
        #[arg(long, default_value_t = 32_768)]
        bignum_frame: usize,
        /// `--duration` is how long the abusers run; `--threads` is for normal traffic.
        #[command(flatten)]
        common: Common,
    },
    /// Write a test CA and an ECDSA P-256 server certificate for 127.0.0.1/localhost:
    /// DIR/ca.pem, DIR/cert.pem, DIR/key.pem (fresh keys each time; for tests only).
    Cert {
        /// Directory to write into (created if missing).
        #[arg(long, default_value = ".")]
        out: String,
    },
    /// Plain TCP echo pair: this machine's CPU cost of one read + one write per message.
    Floor {
        #[arg(short = 'c', long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CloseArg {
    Clean,
    Rst,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReplyArg {
    Fixed,
    Echo,
    EventBody,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("wsgate-load: {e}");
        std::process::exit(2);
    }
}

fn run(cli: Cli) -> wsgate_load::Result<()> {
    match cli.cmd {
        Cmd::Rr {
            url,
            connections,
            payload,
            action,
            rate,
            pipeline,
            timeout,
            tls,
            common,
        } => {
            let mut o = rr::RrOpts::new(target(&url, &tls)?);
            o.connections = connections;
            o.threads = common.threads;
            o.duration = common.duration;
            o.payload = payload;
            o.action = action;
            o.rate = rate;
            o.pipeline = pipeline;
            o.timeout = timeout;
            o.progress = !common.quiet;
            let r = rr::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.faults())
        }
        Cmd::Connect {
            url,
            connections,
            sources,
            close,
            timeout,
            tls,
            common,
        } => {
            let o = connect::ConnectOpts {
                target: target(&url, &tls)?,
                concurrency: connections,
                threads: common.threads,
                duration: common.duration,
                sources,
                close: match close {
                    CloseArg::Clean => connect::CloseMode::Clean,
                    CloseArg::Rst => connect::CloseMode::Rst,
                },
                timeout,
                progress: !common.quiet,
                stop: None,
            };
            let r = connect::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.faults())
        }
        Cmd::Idle {
            url,
            count,
            sources,
            source_offset,
            concurrency,
            gateway_pid,
            announce,
            tls,
            common,
        } => {
            let o = idle::IdleOpts {
                target: target(&url, &tls)?,
                count,
                sources,
                source_offset,
                concurrency,
                duration: common.duration,
                connect_timeout: Duration::from_secs(30),
                gateway_pid,
                announce,
            };
            let r = idle::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.failed + r.dropped)
        }
        Cmd::Push {
            url,
            push: args,
            common,
        } => {
            let mut o = push::PushOpts::new(ws::parse_url(&url)?, net::parse_addr(&args.mgmt)?);
            args.apply(&mut o, &common);
            let r = push::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.faults())
        }
        Cmd::ClusterPush {
            gateway,
            push: args,
            gateway_pid,
            common,
        } => {
            let targets = gateway
                .iter()
                .map(|u| ws::parse_url(u))
                .collect::<wsgate_load::Result<Vec<_>>>()?;
            let mgmt = net::parse_addr(&args.mgmt)?;
            let mut o = cluster_push::ClusterPushOpts::new(targets, mgmt)?;
            o.gateway_pids = gateway_pid;
            args.apply(&mut o.push, &common);
            let r = cluster_push::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.faults())
        }
        Cmd::GroupSend {
            gateway,
            mgmt,
            mgmt_prefix,
            group,
            members,
            senders,
            payload,
            id_action,
            drain,
            no_join,
            hold,
            common,
        } => {
            let mut targets = gateway
                .iter()
                .map(|u| ws::parse_url(u))
                .collect::<wsgate_load::Result<Vec<_>>>()?
                .into_iter();
            let first = targets.next().ok_or("at least one --gateway")?;
            let mut o = group_send::GroupSendOpts::new(first, net::parse_addr(&mgmt)?);
            o.more_targets = targets.collect();
            o.mgmt_prefix = mgmt_prefix;
            o.group = group;
            o.members = members;
            o.senders = senders;
            o.threads = common.threads;
            o.duration = common.duration;
            o.payload = payload;
            o.id_action = id_action;
            o.drain = drain;
            o.no_join = no_join;
            o.hold = hold;
            o.progress = !common.quiet;
            let r = group_send::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.faults())
        }
        Cmd::Backend {
            listen,
            reply,
            body,
            status,
            delay_ms,
            chunked,
            common,
        } => {
            let o = backend::BackendOpts {
                listen: net::parse_addr(&listen)?,
                threads: common.threads,
                mode: match reply {
                    ReplyArg::Fixed => backend::Mode::Fixed(body.into_bytes()),
                    ReplyArg::Echo => backend::Mode::Echo,
                    ReplyArg::EventBody => backend::Mode::EventBody,
                },
                status,
                delay: Duration::from_millis(delay_ms),
                chunked,
                duration: common.duration,
            };
            let b = backend::Backend::start(&o)?;
            println!(
                "wsgate-load backend ready listen={} pid={}",
                b.addr,
                std::process::id()
            );
            let _ = std::io::stdout().flush();
            let r = b.join();
            r.report().print(common.json);
            Ok(())
        }
        Cmd::Abuse {
            url,
            connections,
            payload,
            action,
            timeout,
            warmup,
            settle,
            gateway_pid,
            rss_slack_mb,
            rss_abort_mb,
            slow_readers,
            slow_bytes,
            slow_rate,
            management,
            management_token,
            mgmt_clients,
            mgmt_rate,
            churn,
            bignum_clients,
            bignum_bytes,
            bignum_frame,
            common,
        } => {
            let mut o = abuse::AbuseOpts::new(ws::parse_url(&url)?);
            o.normal.connections = connections;
            o.normal.threads = common.threads;
            o.normal.payload = payload;
            o.normal.action = action;
            o.normal.timeout = timeout;
            o.warmup = warmup;
            o.duration = common.duration;
            o.settle = settle;
            o.gateway_pid = gateway_pid;
            o.rss_slack = rss_slack_mb.saturating_mul(1 << 20);
            o.rss_abort = (rss_abort_mb > 0).then(|| rss_abort_mb.saturating_mul(1 << 20));
            o.slow_readers = slow_readers;
            o.slow_bytes = slow_bytes.max(1);
            o.slow_rate = slow_rate;
            o.management = management.as_deref().map(net::parse_addr).transpose()?;
            o.management_token = management_token;
            o.mgmt_clients = mgmt_clients;
            o.mgmt_rate = mgmt_rate;
            o.churn = churn;
            o.bignum_clients = bignum_clients;
            o.bignum_bytes = bignum_bytes;
            o.bignum_frame = bignum_frame.max(1);
            o.progress = !common.quiet;
            let r = abuse::run(&o)?;
            r.report(&o).print(common.json);
            let why = r.failures(&o);
            for w in &why {
                eprintln!("wsgate-load abuse: FAIL: {w}");
            }
            exit_on_faults(why.len() as u64)
        }
        Cmd::Cert { out } => {
            let pki = tls::make_test_pki(std::path::Path::new(&out))?;
            println!("ca={}", pki.ca.display());
            println!("cert={}", pki.cert.display());
            println!("key={}", pki.key.display());
            Ok(())
        }
        Cmd::Floor {
            connections,
            payload,
            common,
        } => {
            let o = floor::FloorOpts {
                connections,
                threads: common.threads,
                payload,
                duration: common.duration,
                progress: !common.quiet,
            };
            let r = floor::run(&o)?;
            r.report(&o).print(common.json);
            exit_on_faults(r.errors)
        }
    }
}

/// Faults make the exit status 1 (after the report), so scripts notice them.
fn exit_on_faults(faults: u64) -> wsgate_load::Result<()> {
    if faults > 0 {
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
    Ok(())
}
