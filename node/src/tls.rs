//! TLS for a member's listeners and the connections it makes, with etcd's flags and semantics:
//! a certificate and key, optionally a CA that client certificates must chain to
//! (`--client-cert-auth`), a minimum version and a cipher-suite list. Files are re-read when
//! they change (checked at most once a second, on the next handshake), so certificates rotate
//! without a restart; a changed set that does not load (say, a key written before its
//! certificate) is logged and the previous one kept, so no handshake fails meanwhile.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn err(msg: impl Into<String>) -> TlsError {
    TlsError(msg.into())
}

/// The lowest TLS version a listener accepts (`--tls-min-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// Parses etcd's spelling: `TLS1.2` or `TLS1.3` (TLS 1.0 and 1.1 are not offered).
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        match s {
            "TLS1.2" => Ok(MinVersion::Tls12),
            "TLS1.3" => Ok(MinVersion::Tls13),
            "TLS1.0" | "TLS1.1" => Err(err(format!(
                "--tls-min-version {s} is not supported: TLS1.2 is the lowest version offered"
            ))),
            other => Err(err(format!(
                "--tls-min-version must be TLS1.2 or TLS1.3, not {other:?}"
            ))),
        }
    }

    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => &BOTH,
            MinVersion::Tls13 => &ONLY_13,
        }
    }
}

/// Looks up cipher suites by their IANA names (as etcd's `--cipher-suites` takes them, e.g.
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`). TLS 1.3 suites are always enabled, as in Go.
pub fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let all = provider::ALL_CIPHER_SUITES;
    let mut out: Vec<SupportedCipherSuite> = all
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    for n in names {
        let found = all
            .iter()
            .find(|s| format!("{:?}", s.suite()) == *n)
            .ok_or_else(|| {
                err(format!(
                    "--cipher-suites: unknown or unsupported cipher suite {n:?} (supported: {})",
                    all.iter()
                        .filter(|s| s.version() != &rustls::version::TLS13)
                        .map(|s| format!("{:?}", s.suite()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if !out.contains(found) {
            out.push(*found);
        }
    }
    Ok(out)
}

/// One listener kind's TLS flags (clients: `--cert-file` ...; peers: `--peer-cert-file` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain this member presents.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA bundle that peer (client) certificates must chain to; also the roots this member
    /// trusts when it dials.
    pub trusted_ca: Option<PathBuf>,
    /// Require and verify a client certificate.
    pub client_cert_auth: bool,
    /// Lowest version accepted.
    pub min_version: MinVersion,
    /// TLS 1.2 suites allowed, by IANA name (empty: rustls's defaults).
    pub cipher_suites: Vec<String>,
}

impl TlsSettings {
    fn files(&self) -> Vec<&Path> {
        let mut f = vec![self.cert.as_path(), self.key.as_path()];
        if let Some(ca) = &self.trusted_ca {
            f.push(ca);
        }
        f
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(format!("{}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in read_certs(path)? {
        store
            .add(c)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
    }
    Ok(store)
}

fn crypto(s: &TlsSettings) -> Result<Arc<rustls::crypto::CryptoProvider>, TlsError> {
    let mut p = provider::default_provider();
    if !s.cipher_suites.is_empty() {
        p.cipher_suites = cipher_suites(&s.cipher_suites)?;
    }
    Ok(Arc::new(p))
}

/// Builds a server configuration from the files as they are now.
pub fn server_config(s: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = crypto(s)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(s.min_version.versions())
        .map_err(|e| err(format!("TLS versions: {e}")))?;
    let builder = if s.client_cert_auth {
        let ca = s
            .trusted_ca
            .as_ref()
            .ok_or_else(|| err("client certificate auth needs a trusted CA file"))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
            .build()
            .map_err(|e| err(format!("{}: {e}", ca.display())))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder
        .with_single_cert(read_certs(&s.cert)?, read_key(&s.key)?)
        .map_err(|e| err(format!("{} and {}: {e}", s.cert.display(), s.key.display())))?;
    // gRPC needs HTTP/2; etcd's listeners also speak HTTP/1.1.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// What identifies the files' contents without reading them: length and modification time.
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(s: &TlsSettings) -> Stamp {
    s.files()
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// How often the files are looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

struct Loaded {
    config: Arc<ServerConfig>,
    stamp: Stamp,
    checked: Instant,
}

/// A listener's TLS configuration, re-read from its files when they change.
pub struct ReloadingTls {
    settings: TlsSettings,
    loaded: Mutex<Loaded>,
}

impl ReloadingTls {
    /// Loads the files now; an error here is a configuration error.
    pub fn new(settings: TlsSettings) -> Result<Self, TlsError> {
        let stamp = stamp(&settings);
        let config = Arc::new(server_config(&settings)?);
        Ok(ReloadingTls {
            settings,
            loaded: Mutex::new(Loaded {
                config,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for the next handshake: reloaded first when the files changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut l = self.loaded.lock();
        if l.checked.elapsed() >= RELOAD_CHECK {
            l.checked = Instant::now();
            let now = stamp(&self.settings);
            if now != l.stamp {
                match server_config(&self.settings) {
                    Ok(c) => {
                        l.config = Arc::new(c);
                        l.stamp = now;
                        tracing::info!(cert = %self.settings.cert.display(), "reloaded TLS certificate");
                    }
                    // Half-written files: keep serving with the previous set, retry next time.
                    Err(e) => tracing::warn!("keeping the previous TLS certificate: {e}"),
                }
            }
        }
        l.config.clone()
    }
}

/// Handshakes in progress at once on one listener (each bounded by [`HANDSHAKE_TIMEOUT`]).
const MAX_HANDSHAKES: usize = 256;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS connections on `l`: handshakes run concurrently (a slow client holds up only
/// itself), completed ones are yielded in order of completion. Failed handshakes are logged at
/// debug level and dropped.
pub fn incoming(
    l: TcpListener,
    tls: Arc<ReloadingTls>,
) -> impl tokio_stream::Stream<Item = io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer): (TcpStream, SocketAddr) = match l.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            if tx.is_closed() {
                return;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A TLS listener for `axum::serve` (the metrics and health endpoints over https): connections
/// come from [`incoming`], so handshakes are bounded and certificates reload the same way.
pub struct TlsListener {
    local: SocketAddr,
    accepted: std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = io::Result<TlsStream<TcpStream>>> + Send>,
    >,
}

impl TlsListener {
    /// Serves TLS with `tls` on `l`.
    pub fn new(l: TcpListener, tls: Arc<ReloadingTls>) -> io::Result<Self> {
        Ok(TlsListener {
            local: l.local_addr()?,
            accepted: Box::pin(incoming(l, tls)),
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use tokio_stream::StreamExt;
        loop {
            match self.accepted.next().await {
                Some(Ok(s)) => {
                    let peer = s.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (s, peer);
                }
                Some(Err(_)) => continue,
                // The acceptor stopped (its listener failed): serve nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The TLS a member dials `url` with: for an https:// URL with `settings` given, the PEM files
/// it presents and trusts, read at each connection so a rotated certificate is used from the
/// next one on; `None` for plain http.
pub fn client_tls_for(
    settings: Option<&TlsSettings>,
    url: &str,
) -> Result<Option<tonic::transport::ClientTlsConfig>, TlsError> {
    match settings {
        Some(s) if url.starts_with("https://") => client_tls(s).map(Some),
        _ => Ok(None),
    }
}

fn client_tls(s: &TlsSettings) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())));
    let mut c = tonic::transport::ClientTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(read(&s.cert)?, read(&s.key)?),
    );
    if let Some(ca) = &s.trusted_ca {
        c = c.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(c)
}

/// True when the certificate `der` is valid for `host` (a DNS name or an IP address, as in a
/// peer URL) by its subject alternative names, as a TLS client checks a server's.
pub fn certificate_names(der: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(name) = rustls::pki_types::ServerName::try_from(host) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The subject common name of the certificate `der`, when it has one in UTF-8.
pub fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(String::from)
}
