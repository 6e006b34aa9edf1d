//! TLS for `wss://` targets: the client configuration (`--ca FILE` or `--insecure`,
//! TLS 1.3 only by default, session resumption on or off), [`Stream`], a socket that is
//! either plain or a rustls `ClientConnection` driven by the caller's own mio loop
//! (sans-IO: no thread, no runtime), and [`make_test_pki`], which writes a test CA and
//! an ECDSA P-256 server certificate for 127.0.0.1/localhost (`wsgate-load cert`), so
//! the suite runs TLS without openssl.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::crypto::{ring as provider, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, NamedGroup, SignatureScheme};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;

/// Which server certificates the generator trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The certificates of a PEM file (a test CA, or the server's own certificate).
    CaFile(String),
    /// Anything: [`AcceptAnyServerCertificate`]. For the generator only, never a product.
    Insecure,
}

/// Protocol versions the client offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versions {
    Tls13,
    Tls12,
    Both,
}

/// How to make TLS client connections: one shared config (its session store is where
/// resumption tickets live) and the name sent as SNI and checked in the certificate.
#[derive(Clone, Debug)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
    /// Whether the config keeps and offers session tickets (`--tls-resume`).
    pub resume: bool,
}

impl TlsClient {
    /// Builds the client config. `host` is the URL's host (an IP address or a name).
    pub fn new(
        host: &str,
        trust: &Trust,
        versions: Versions,
        resume: bool,
    ) -> crate::Result<TlsClient> {
        let provider = Arc::new(provider::default_provider());
        let vs: &[&rustls::SupportedProtocolVersion] = match versions {
            Versions::Tls13 => &[&rustls::version::TLS13],
            Versions::Tls12 => &[&rustls::version::TLS12],
            Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(vs)
            .map_err(|e| format!("TLS versions: {e}"))?;
        let mut config = match trust {
            Trust::CaFile(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = read_certs(Path::new(path))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("{path}: not a usable CA certificate: {e}"))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            Trust::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.resumption = if resume {
            Resumption::store(Arc::new(TicketPool::default()))
        } else {
            Resumption::disabled()
        };
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|_| format!("{name}: not a valid TLS server name"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
            resume,
        })
    }

    /// A new client connection (the ClientHello is queued, not sent).
    pub fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}

/// Most TLS 1.3 tickets kept per server name by [`TicketPool`].
const MAX_TICKETS: usize = 4096;

/// The session store of `--tls-resume`. rustls's own memory cache keeps at most 8
/// TLS 1.3 tickets per server, and a ticket is used once; with 64 handshakes in flight
/// the pool runs dry and many handshakes fall back to full ones. This pool keeps up to
/// [`MAX_TICKETS`], still handing out each one once (as the trait requires), so after
/// the first round nearly every handshake resumes. A lock per handshake is fine here:
/// it is the generator, not the gateway.
#[derive(Debug, Default)]
pub struct TicketPool {
    inner: Mutex<Vec<(ServerName<'static>, PoolEntry)>>,
}

#[derive(Debug, Default)]
struct PoolEntry {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl TicketPool {
    fn with<R>(&self, name: &ServerName<'_>, f: impl FnOnce(&mut PoolEntry) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let i = match g.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                g.push((name.to_owned(), PoolEntry::default()));
                g.len() - 1
            }
        };
        f(&mut g[i].1)
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with(&server_name, |e| e.kx_hint = Some(group));
    }
    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(server_name, |e| e.kx_hint)
    }
    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&server_name, |e| e.tls12 = Some(value));
    }
    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(server_name, |e| e.tls12.clone())
    }
    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, |e| e.tls12 = None);
    }
    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with(&server_name, |e| {
            if e.tls13.len() >= MAX_TICKETS {
                e.tls13.pop_front();
            }
            e.tls13.push_back(value);
        });
    }
    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // Newest first: the server is likelier to still accept it.
        self.with(server_name, |e| e.tls13.pop_back())
    }
}

/// Every certificate in a PEM file (at least one).
pub fn read_certs(path: &Path) -> crate::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the file", path.display()));
    }
    Ok(certs)
}

/// A server certificate verifier that accepts every certificate (`--insecure`): the
/// handshake's signatures are still checked, so the peer holds the key it presents,
/// but nobody vouches for that key. For load generation against test setups only.
#[derive(Debug)]
pub struct AcceptAnyServerCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The provider this crate uses (ring), for callers that build server configs (tests).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// A client socket, plain or TLS. `Read` returns plaintext and keeps the invariant the
/// event loops rely on: a read shorter than the buffer means the socket is drained (so
/// edge-triggered readiness fires again for new bytes). `Write` hands plaintext to
/// rustls and writes out as many TLS records as the socket takes; what it does not take
/// stays queued in rustls and leaves with the next [`Stream::flush_tls`] (called on every
/// event by `WsConn`).
pub struct Stream {
    pub tcp: mio::net::TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// The TCP peer closed (EOF); plaintext still buffered may be read first.
    tcp_eof: bool,
}

impl Stream {
    pub fn plain(tcp: mio::net::TcpStream) -> Stream {
        Stream {
            tcp,
            tls: None,
            tcp_eof: false,
        }
    }

    pub fn tls(tcp: mio::net::TcpStream, conn: ClientConnection) -> Stream {
        Stream {
            tcp,
            tls: Some(Box::new(conn)),
            tcp_eof: false,
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS connection, for inspection (negotiated version, resumption).
    pub fn tls_conn(&self) -> Option<&ClientConnection> {
        self.tls.as_deref()
    }

    /// Writes queued TLS records until rustls has none or the socket would block.
    /// Ok(true) when nothing is left queued.
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(true);
        };
        let mut rounds = 0;
        while tls.wants_write() && rounds < 64 {
            rounds += 1;
            match tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(!tls.wants_write())
    }

    /// Queues a TLS close_notify alert (sent by the next flush).
    pub fn send_close_notify(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
    }

    fn read_tls_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut got = 0;
        // Bounded: every round either fills `buf`, ends, or consumes socket bytes.
        for _ in 0..1024 {
            let tls = self.tls.as_mut().expect("TLS stream");
            match tls.reader().read(&mut buf[got..]) {
                Ok(0) => return Ok(got), // close_notify: EOF after what we have
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        return Ok(got);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(got),
                Err(e) => return if got > 0 { Ok(got) } else { Err(e) },
            }
            if self.tcp_eof {
                return Ok(got);
            }
            match tls.read_tls(&mut self.tcp) {
                Ok(0) => self.tcp_eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if got > 0 {
                        Ok(got)
                    } else {
                        Err(io::ErrorKind::WouldBlock.into())
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return if got > 0 { Ok(got) } else { Err(e) },
            }
            if let Err(e) = tls.process_new_packets() {
                // rustls queued an alert for the peer; try to send it, then fail.
                let _ = self.flush_tls();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages (and the plaintext queued before the handshake
            // finished) leave as soon as rustls has them.
            match self.flush_tls() {
                Ok(_) => {}
                Err(e) if got == 0 => return Err(e),
                Err(_) => return Ok(got),
            }
        }
        Ok(got)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tls.is_some() {
            self.read_tls_plaintext(buf)
        } else {
            self.tcp.read(buf)
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.tls.is_none() {
            return self.tcp.write(buf);
        }
        // Old records first, so rustls's buffer (bounded) does not grow without end.
        self.flush_tls()?;
        let n = self.tls.as_mut().expect("TLS stream").writer().write(buf)?;
        self.flush_tls()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls().map(|_| ())
    }
}

impl mio::event::Source for Stream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.tcp.register(registry, token, interests)
    }
    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.tcp.reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.tcp.deregister(registry)
    }
}

/// The files [`make_test_pki`] writes.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Writes `ca.pem` (a test CA), `cert.pem` (an ECDSA P-256 server certificate for
/// 127.0.0.1, ::1 and localhost, signed by that CA) and `key.pem` (its PKCS#8 key)
/// into `dir`. Fresh keys every time; nothing is meant to be kept or committed.
pub fn make_test_pki(dir: &Path) -> crate::Result<TestPki> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let err = |e: rcgen::Error| format!("certificate: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsgate-load test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(err)?;

    let pki = TestPki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    let write =
        |p: &Path, s: String| std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()));
    write(&pki.ca, ca_cert.pem())?;
    write(&pki.cert, cert.pem())?;
    write(&pki.key, key.serialize_pem())?;
    // The key is a secret even in a test: readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o600));
    }
    Ok(pki)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pki_is_valid_for_loopback() {
        let dir = std::env::temp_dir().join(format!("wsgate-load-pki-{}", std::process::id()));
        let pki = make_test_pki(&dir).unwrap();
        let ca = read_certs(&pki.ca).unwrap();
        let cert = read_certs(&pki.cert).unwrap();
        assert_eq!((ca.len(), cert.len()), (1, 1));
        // The server certificate chains to the CA for each loopback name.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca[0].clone()).unwrap();
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            crypto_provider(),
        )
        .build()
        .unwrap();
        for name in ["127.0.0.1", "localhost", "::1"] {
            let sn = ServerName::try_from(name.to_string()).unwrap();
            v.verify_server_cert(&cert[0], &[], &sn, &[], UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("example.com".to_string()).unwrap();
        assert!(v
            .verify_server_cert(&cert[0], &[], &other, &[], UnixTime::now())
            .is_err());
        let key = std::fs::read_to_string(&pki.key).unwrap();
        assert!(key.contains("BEGIN PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_configs() {
        let c = TlsClient::new("127.0.0.1", &Trust::Insecure, Versions::Tls13, false).unwrap();
        assert!(!c.resume);
        assert!(c.connect().is_ok());
        assert!(TlsClient::new(
            "127.0.0.1",
            &Trust::CaFile("/nonexistent".into()),
            Versions::Both,
            true
        )
        .is_err());
    }
}
