//! Starts the gateway: raises the open-file limit, binds one `SO_REUSEPORT` listener
//! per worker after checking that no other process listens on the address, starts
//! the worker threads (optionally pinned), prints the ready line, and stops on SIGTERM
//! or SIGINT, or exits non-zero at once when a worker dies.
//!
//! # A port another process holds (SPEC §1)
//!
//! `SO_REUSEPORT` lets any process of the same user join a listening group, so a
//! second gateway started on the same address would silently take half the clients.
//! Before building its group, the gateway binds a probe socket *without*
//! `SO_REUSEPORT` (with `SO_REUSEADDR`, so `TIME_WAIT` leftovers of a previous run do
//! not count): it fails with `EADDRINUSE` exactly when someone listens there, and the
//! gateway exits 1 naming the address. With port 0 the probe also picks the port the
//! group then binds. The probe is closed just before the group binds, so two gateways
//! started within those microseconds could still both pass; anything started later
//! (the case of an operator's mistake) is refused.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use mio::Poll;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{self, Config};
use crate::mailbox::Mailboxes;
use crate::metrics::Metrics;
use crate::worker::{self, Setup, Worker};

mod supervise;

use supervise::Event;

/// Why the gateway could not run.
#[derive(Debug)]
pub enum Error {
    /// A listener could not be bound: reported like a config error.
    Config(config::Error),
    Io(std::io::Error),
    /// A worker thread ended on its own: the process exits non-zero.
    WorkerDied(supervise::Died),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::Io(e) => e.fmt(f),
            Error::WorkerDied(d) => d.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// Binds `n` listeners sharing one address through `SO_REUSEPORT`, after making
/// sure no other process listens there (module docs).
fn bind_group(
    config: &Config,
    key: &str,
    addr: SocketAddr,
    n: usize,
) -> Result<Vec<std::net::TcpListener>, Error> {
    let refuse = |problem: String| {
        Error::Config(config::Error {
            file: config.path.clone(),
            key: key.to_string(),
            problem,
        })
    };
    let addr = match probe(addr) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            return Err(refuse(format!(
                "cannot listen on {addr}: address in use: another process already listens there"
            )))
        }
        Err(e) => return Err(refuse(format!("cannot listen on {addr}: {e}"))),
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let l = bind_one(addr).map_err(|e| refuse(format!("cannot listen on {addr}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}

/// Binds `addr` without `SO_REUSEPORT` and closes it again: `AddrInUse` when another
/// socket listens there. Returns the bound address (the real port for port 0).
fn probe(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP address"))
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt per listener
    // instead of one per connection (the worker checks once that it holds).
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Raises the soft open-file limit to the hard one: every connection is a descriptor.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => log::debug!("open-file limit {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
}

/// SIGHUP (SPEC §10.1): re-reads each listener's certificate and key on the signal
/// thread, publishes what loaded (a pair that does not load keeps the old one, with
/// an error naming the file), and wakes every worker, whose `Worker::on_reload` picks
/// it up. Open connections keep the configuration they started with.
fn on_sighup(
    listeners: &[Option<crate::tls::Listener>; 2],
    reload: &crate::tls::Reload,
    wakers: &[Arc<mio::Waker>],
) {
    let mut configs = reload.configs();
    let slots = [
        ("server.tls", &listeners[0], &mut configs.client),
        ("management.tls", &listeners[1], &mut configs.management),
    ];
    let mut reloaded = Vec::new();
    for (table, listener, slot) in slots {
        let Some(l) = listener else {
            continue;
        };
        match l.load() {
            Ok(c) => {
                *slot = Some(c);
                reloaded.push((table, l));
            }
            Err(e) => log::error!("SIGHUP: {table}.{}: {e}; keeping the previous pair", e.key),
        }
    }
    // Published before it is logged: a connection accepted after the line uses the
    // new pair (workers check the generation at every accept).
    reload.publish(configs);
    for (table, l) in reloaded {
        log::info!(
            "SIGHUP: {table}: reloaded {} and {}",
            l.files.cert.display(),
            l.files.key.display()
        );
    }
    for w in wakers {
        let _ = w.wake();
    }
}

/// A listener's TLS (when configured) and its first configuration; the files were
/// checked by `config`, but may have changed since (reported the same way).
fn tls_listener(
    config: &Config,
    table: &str,
    files: &Option<crate::tls::Files>,
) -> Result<Option<(crate::tls::Listener, Arc<rustls::ServerConfig>)>, Error> {
    let Some(files) = files else {
        return Ok(None);
    };
    let refuse = |key: String, problem: String| {
        Error::Config(config::Error {
            file: config.path.clone(),
            key,
            problem,
        })
    };
    let listener = crate::tls::Listener::new(files.clone()).map_err(|e| {
        refuse(
            table.to_string(),
            format!("cannot set up session tickets: {e}"),
        )
    })?;
    let server = listener.load().map_err(|e| {
        refuse(
            format!("{table}.{}", e.key),
            format!("{}: {}", e.file.display(), e.problem),
        )
    })?;
    Ok(Some((listener, server)))
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(config: Config) -> Result<(), Error> {
    // Handled from the start: a SIGHUP (a log rotation hook) during startup must not
    // end the process; signals that arrive before the thread below runs wait for it.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    raise_fd_limit();
    let config = Arc::new(config);
    let n = config.server.workers;
    let clients = bind_group(&config, "server.listen", config.server.listen, n)?;
    let admins = bind_group(&config, "management.listen", config.management.listen, n)?;
    let listen = clients[0].local_addr()?;
    let management = admins[0].local_addr()?;
    let ids = match &config.cluster {
        // Every node decodes every other's ids (SPEC §6, §15); a random epoch per start.
        Some(c) => {
            let mut e = [0u8; 2];
            let _ = getrandom::fill(&mut e);
            let key = crate::id::Key::from_secret(&c.secret);
            crate::id::Codec::new(key, c.node, u16::from_le_bytes(e))
        }
        None => crate::id::Codec::random(),
    };
    let cluster = config
        .cluster
        .as_ref()
        .map(|_| Arc::new(crate::cluster::Shared::new(n)));
    let shutdown = Arc::new(AtomicBool::new(false));
    let cores = core_affinity::get_core_ids().unwrap_or_default();

    let mut polls = Vec::with_capacity(n);
    let mut wakers = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        wakers.push(worker::waker(&poll)?);
        polls.push(poll);
    }
    let mail = Arc::new(Mailboxes::new(wakers.clone()));
    let metrics = Arc::new(Metrics::new(n, config.routes.len()));
    let hangups = Arc::new(AtomicU64::new(0));
    let client_tls = tls_listener(&config, "server.tls", &config.server.tls)?;
    let management_tls = tls_listener(&config, "management.tls", &config.management.tls)?;
    let reload = Arc::new(crate::tls::Reload::new(crate::tls::Configs {
        client: client_tls.as_ref().map(|t| t.1.clone()),
        management: management_tls.as_ref().map(|t| t.1.clone()),
    }));
    let tls_listeners = [client_tls.map(|t| t.0), management_tls.map(|t| t.0)];
    let (events, ended) = mpsc::channel();
    let mut threads = Vec::with_capacity(n);
    for (i, ((listener, admin), poll)) in clients.into_iter().zip(admins).zip(polls).enumerate() {
        let setup = Setup {
            mail: mail.clone(),
            metrics: metrics.clone(),
            index: i as u8,
            workers: n,
            ids,
            config: config.clone(),
            listener,
            management: admin,
            poll,
            shutdown: shutdown.clone(),
            hangups: hangups.clone(),
            reload: reload.clone(),
            cluster: cluster.clone(),
        };
        let w = Worker::new(setup)?;
        let core = (config.server.pin_cores && !cores.is_empty()).then(|| cores[i % cores.len()]);
        threads.push(supervise::spawn(
            format!("wsgate-worker-{i}"),
            i,
            events.clone(),
            move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(c) {
                        log::warn!("worker {i}: cannot pin to core {}", c.id);
                    }
                }
                w.run().map_err(|e| e.to_string())
            },
        )?);
    }

    let reload_wakers = wakers.clone();
    std::thread::Builder::new()
        .name("wsgate-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == signal_hook::consts::SIGHUP {
                    // Certificates are re-read here; each worker, woken, takes the
                    // new ones and reopens its access log (log rotation, SPEC §10.4).
                    log::info!("SIGHUP: reloading certificates, reopening the access log");
                    hangups.fetch_add(1, Ordering::AcqRel);
                    on_sighup(&tls_listeners, &reload, &reload_wakers);
                    continue;
                }
                if events.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "wsgate ready listen={listen} management={management} workers={n}"
        )?;
        out.flush()?;
    }
    log::info!(
        "serving api {} on {listen} (management {management}) with {n} workers",
        config.api.name
    );
    let died = |d: supervise::Died| {
        log::error!("{d}: exiting");
        Error::WorkerDied(d)
    };
    let sig = supervise::until_signal(&ended).map_err(died)?;
    log::info!("signal {sig}: shutting down");
    shutdown.store(true, Ordering::Release);
    for w in &wakers {
        let _ = w.wake();
    }
    supervise::until_ended(&ended, n).map_err(died)?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}
