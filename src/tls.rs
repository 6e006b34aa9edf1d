//! TLS termination (SPEC §10.1): the certificate pair of a listener loaded into a
//! `rustls::ServerConfig`, and the sans-IO glue between a `rustls::ServerConnection`
//! and a non-blocking socket that the worker loops drive (no thread, no runtime).
//!
//! Decrypted input lands in the caller's buffer (the worker's read buffer, where the
//! session processes it in place as it does for plain sockets); encrypted output is
//! written to the socket at once and what the socket does not take is moved out of
//! rustls into the connection's own output buffer, so the outbound limit counts it.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerConfig, ServerConnection, StoresServerSessions};

/// Sessions the server-side resumption cache keeps (TLS 1.2 session ids; 1.3 and 1.2
/// clients that take tickets need none).
const SESSION_CACHE: usize = 4096;

/// The lowest protocol version a listener accepts (`min_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

/// A listener's `[*.tls]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub min_version: Version,
}

/// A listener's TLS: where its pair comes from, and the resumption state every
/// configuration built for it shares (the runtime keeps it for SIGHUP).
#[derive(Debug, Clone)]
pub struct Listener {
    pub files: Files,
    pub resumption: Resumption,
}

impl Listener {
    pub fn new(files: Files) -> Result<Listener, rustls::Error> {
        Ok(Listener {
            files,
            resumption: Resumption::new()?,
        })
    }

    /// Reads the pair and builds a configuration (see [`load`]).
    pub fn load(&self) -> Result<Arc<ServerConfig>, LoadError> {
        load(&self.files, &self.resumption)
    }
}

/// Why a pair could not be loaded: the config key (`cert` or `key`) and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub key: &'static str,
    pub file: PathBuf,
    pub problem: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.file.display(),
            self.key,
            self.problem
        )
    }
}

/// Session resumption state shared by every configuration of the process, so
/// tickets and cached sessions stay valid across SIGHUP reloads.
#[derive(Debug, Clone)]
pub struct Resumption {
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    pub fn new() -> Result<Resumption, rustls::Error> {
        Ok(Resumption {
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            cache: rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE),
        })
    }
}

/// Reads the certificate chain and key of `files` and builds a server configuration:
/// TLS 1.2 and 1.3 (or 1.3 only), ALPN `http/1.1`, tickets and a session cache.
pub fn load(files: &Files, resumption: &Resumption) -> Result<Arc<ServerConfig>, LoadError> {
    let cert_err = |problem: String| LoadError {
        key: "cert",
        file: files.cert.clone(),
        problem,
    };
    let key_err = |problem: String| LoadError {
        key: "key",
        file: files.key.clone(),
        problem,
    };
    let certs = read_certs(&files.cert).map_err(cert_err)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| key_err(format!("no usable private key: {}", pem_problem(e))))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match files.min_version {
        Version::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Version::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            key_err(format!(
                "the key does not fit the certificate {}: {e}",
                files.cert.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.cache.clone();
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_problem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_problem)?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block in the file".into());
    }
    Ok(certs)
}

fn pem_problem(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => format!("cannot read the file: {e}"),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of that kind".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// The TLS configurations of both listeners, as they are now.
#[derive(Debug, Clone, Default)]
pub struct Configs {
    pub client: Option<Arc<ServerConfig>>,
    pub management: Option<Arc<ServerConfig>>,
}

/// What SIGHUP changes, as the workers see it: the runtime re-reads the files,
/// publishes the result and bumps `generation`, then wakes every worker; a worker that
/// sees a generation it has not handled runs `Worker::on_reload` (once per SIGHUP,
/// never on the message path). The mutex is taken only there and by the runtime.
#[derive(Debug, Default)]
pub struct Reload {
    generation: std::sync::atomic::AtomicU64,
    configs: Mutex<Configs>,
}

impl Reload {
    pub fn new(configs: Configs) -> Reload {
        Reload {
            generation: Default::default(),
            configs: Mutex::new(configs),
        }
    }

    /// How many reloads were published.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current configurations.
    pub fn configs(&self) -> Configs {
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publishes a reload (the caller wakes the workers).
    pub fn publish(&self, configs: Configs) {
        *self.configs.lock().unwrap_or_else(|p| p.into_inner()) = configs;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A connection's TLS state, boxed by its owner so plain connections stay small.
#[derive(Debug)]
pub struct Session {
    conn: ServerConnection,
    /// The socket reported EOF (or an error) to rustls.
    eof: bool,
    /// The last read stopped with `dst` full: rustls may hold input the socket no
    /// longer has (no readiness event will report it).
    holds_input: bool,
}

/// What one [`Session::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `n` plaintext bytes (maybe 0 during the handshake); `drained`: the socket has
    /// nothing more now.
    Data { n: usize, drained: bool },
    /// The peer closed (close_notify or EOF), or the TLS layer failed; any alert owed
    /// to the peer is queued (see [`Session::write_to`]).
    Closed,
}

impl Session {
    pub fn new(config: Arc<ServerConfig>) -> io::Result<Session> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        // The connection's own output buffer holds what the socket does not take
        // (counted by the outbound limit); rustls must never refuse plaintext.
        conn.set_buffer_limit(None);
        Ok(Session {
            conn,
            eof: false,
            holds_input: false,
        })
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether input may wait inside rustls (see `holds_input`).
    pub fn holds_input(&self) -> bool {
        self.holds_input
    }

    /// Fills `dst` with plaintext: first what rustls already decrypted, then by
    /// reading the socket, until `dst` is full or the socket would block. Handshake
    /// records rustls wants to send are left queued for [`Session::write_to`].
    pub fn read(&mut self, stream: &mut impl io::Read, dst: &mut [u8]) -> Input {
        let got = self.fill(stream, dst);
        self.holds_input = matches!(got, Input::Data { drained: false, .. });
        got
    }

    fn fill(&mut self, stream: &mut impl io::Read, dst: &mut [u8]) -> Input {
        let mut n = 0;
        loop {
            match self.conn.reader().read(&mut dst[n..]) {
                Ok(0) => return self.closed_after(n),
                Ok(m) => {
                    n += m;
                    if n == dst.len() {
                        return Input::Data { n, drained: false };
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return self.closed_after(n),
            }
            if self.eof {
                return self.closed_after(n);
            }
            match self.conn.read_tls(stream) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    if self.conn.process_new_packets().is_err() {
                        // A bad record or a refused handshake (TLS 1.0, no common
                        // cipher): the alert is queued; nothing more is read.
                        self.eof = true;
                        return Input::Closed;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Input::Data { n, drained: true }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.eof = true,
            }
        }
    }

    /// At the peer's end: the plaintext already read is still processed first.
    fn closed_after(&mut self, n: usize) -> Input {
        self.eof = true;
        if n > 0 {
            Input::Data { n, drained: true }
        } else {
            Input::Closed
        }
    }

    /// Encrypts `data` (queued in rustls until [`Session::write_to`]).
    pub fn encrypt(&mut self, data: &[u8]) {
        // Without a buffer limit the writer takes everything (before the handshake
        // ends it is kept as plaintext and sent once keys exist).
        let _ = self.conn.writer().write_all(data);
    }

    /// Whether records wait in rustls.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Moves queued records into `out` (a socket or a buffer) until done or it
    /// would block. `Ok(true)` when nothing is left in rustls.
    pub fn write_to(&mut self, out: &mut impl io::Write) -> io::Result<bool> {
        write_records(&mut self.conn, out)
    }

    /// At the connection's end: a close_notify alert, written if the socket takes
    /// it now (best effort; the socket is closed right after).
    pub fn goodbye(&mut self, stream: &mut impl io::Write) {
        self.conn.send_close_notify();
        let _ = self.write_to(stream);
    }
}

/// Moves a rustls connection's queued records (server or client side) into `out`
/// until none is left (`Ok(true)`) or `out` would block (`Ok(false)`).
pub fn write_records<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    out: &mut impl io::Write,
) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed pair for `localhost` written into a fresh temp dir.
    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}-cert.pem")),
            dir.join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn temp() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "wsgate-tls-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn files(cert: &Path, key: &Path, min_version: Version) -> Files {
        Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            min_version,
        }
    }

    #[test]
    fn a_good_pair_loads_with_alpn_and_tickets() {
        let d = temp();
        let (c, k) = pair(&d, "a");
        let r = Resumption::new().unwrap();
        let config = load(&files(&c, &k, Version::Tls12), &r).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(config.ticketer.enabled());
        // (Which versions a handshake gets: tests/integration/tls.rs.)
        load(&files(&c, &k, Version::Tls13), &r).unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let d = temp();
        let (c, k) = pair(&d, "b");
        let (_, other_key) = pair(&d, "c");
        let r = Resumption::new().unwrap();
        let missing = d.join("missing.pem");
        let e = load(&files(&missing, &k, Version::Tls12), &r).unwrap_err();
        assert_eq!((e.key, e.file.as_path()), ("cert", missing.as_path()));
        let e = load(&files(&c, &missing, Version::Tls12), &r).unwrap_err();
        assert_eq!((e.key, e.file.as_path()), ("key", missing.as_path()));
        // A key file where the certificate should be: no CERTIFICATE block.
        let e = load(&files(&k, &k, Version::Tls12), &r).unwrap_err();
        assert_eq!(e.key, "cert");
        let e = load(&files(&c, &other_key, Version::Tls12), &r).unwrap_err();
        assert_eq!((e.key, e.file.as_path()), ("key", other_key.as_path()));
        assert!(e.problem.contains("does not fit"), "{}", e.problem);
    }

    #[test]
    fn a_reload_is_seen_through_the_generation() {
        let reload = Reload::new(Configs::default());
        assert_eq!(reload.generation(), 0);
        reload.publish(Configs::default());
        assert_eq!(reload.generation(), 1);
        assert!(reload.configs().client.is_none());
    }
}
