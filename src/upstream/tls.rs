//! TLS for the gateway's own outgoing connections (SPEC §10.1): `https://` backends,
//! and later authorizer endpoints, which build their clients here too.
//!
//! At load time the configuration builds one read-only [`ClientConfig`] per trust
//! anchor set — the system's roots (loaded once, and only when an `https://` URI
//! without `tls_ca` needs them) or a `tls_ca` PEM file — and records, per URI, a
//! [`Target`]: that config and the server name (SNI and certificate name). Each worker
//! then makes its own [`Connector`] per pool, with its own session cache, so TLS
//! resumption never shares state between workers. There is no switch that turns
//! certificate verification off.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Sessions a worker's connector remembers per pool, for resumed handshakes.
const SESSIONS_PER_CONNECTOR: usize = 32;

/// Where an `https://` URI connects, as far as TLS is concerned.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URI's host: SNI and the name the certificate must carry (an IP literal
    /// must be in the certificate's IP addresses).
    pub server_name: ServerName<'static>,
    /// The `tls_ca` file, or `None` for the system's roots.
    pub ca: Option<PathBuf>,
    /// Shared by every target with the same trust anchors.
    pub config: Arc<ClientConfig>,
}

impl Target {
    /// Whether two targets may share connections: same name, same trust anchors.
    pub fn same(&self, other: &Target) -> bool {
        self.server_name == other.server_name && Arc::ptr_eq(&self.config, &other.config)
    }

    /// A worker's own client for this target.
    pub fn connector(&self) -> Connector {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::in_memory_sessions(SESSIONS_PER_CONNECTOR);
        Connector {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        }
    }
}

/// One worker's TLS client for one backend pool.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl Connector {
    /// A new client connection (its handshake starts on the first write).
    pub fn connect(&self) -> Result<ClientConnection, rustls::Error> {
        ClientConnection::new(self.config.clone(), self.server_name.clone())
    }

    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
}

impl fmt::Display for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.server_name.to_str())
    }
}

/// The server name of a URI's host (`example.com`, `127.0.0.1`, `[::1]`).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("\"{host}\" is not a valid TLS server name"))
}

/// A client config trusting `roots`: TLS 1.2 and 1.3 with the `ring` provider,
/// ALPN `http/1.1`, no client certificate.
pub fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file (one or more `CERTIFICATE` blocks; anything
/// else in the file is skipped).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut rejected = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM file: {e}"))?;
        if roots.add(cert).is_err() {
            rejected += 1;
        }
    }
    if roots.is_empty() {
        return Err(if rejected > 0 {
            format!("none of its {rejected} certificates can be used as a CA")
        } else {
            "holds no PEM CERTIFICATE".to_string()
        });
    }
    Ok(roots)
}

/// The client configs a configuration's URIs use, built once per trust anchor set
/// while the configuration loads.
#[derive(Default)]
pub struct ClientConfigs {
    system: Option<Arc<ClientConfig>>,
    by_ca: Vec<(PathBuf, Arc<ClientConfig>)>,
}

impl ClientConfigs {
    /// The config trusting the system's roots (loaded on first use).
    pub fn system(&mut self) -> Result<Arc<ClientConfig>, String> {
        if let Some(c) = &self.system {
            return Ok(c.clone());
        }
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            let why = match found.errors.first() {
                Some(e) => format!(": {e}"),
                None => String::new(),
            };
            return Err(format!(
                "no system root certificates could be loaded{why}; set tls_ca"
            ));
        }
        let c = client_config(roots)?;
        self.system = Some(c.clone());
        Ok(c)
    }

    /// The config trusting the CA certificates in the PEM file at `path`.
    pub fn with_ca(&mut self, path: &Path) -> Result<Arc<ClientConfig>, String> {
        if let Some((_, c)) = self.by_ca.iter().find(|(p, _)| p == path) {
            return Ok(c.clone());
        }
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let roots = roots_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        let c = client_config(roots)?;
        self.by_ca.push((path.to_path_buf(), c.clone()));
        Ok(c)
    }

    /// The [`Target`] for `host`, trusting `ca` or else the system's roots.
    pub fn target(&mut self, host: &str, ca: Option<&Path>) -> Result<Target, String> {
        let server_name = server_name(host)?;
        let config = match ca {
            Some(path) => self.with_ca(path)?,
            None => self.system()?,
        };
        Ok(Target {
            server_name,
            ca: ca.map(Path::to_path_buf),
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_of_hosts() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("backend.example"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("bad name").is_err());
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(roots_from_pem(b"").is_err());
        assert!(roots_from_pem(b"hello").is_err());
        assert!(
            roots_from_pem(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn configs_are_shared_per_ca() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir().join(format!("wsgate-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let mut c = ClientConfigs::default();
        let a = c.target("127.0.0.1", Some(&path)).unwrap();
        let b = c.target("127.0.0.1", Some(&path)).unwrap();
        let other = c.target("localhost", Some(&path)).unwrap();
        assert!(a.same(&b), "one config per CA file");
        assert!(!a.same(&other), "another server name is another pool");
        assert!(c.with_ca(&dir.join("missing.pem")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
