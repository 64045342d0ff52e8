//! TLS in the server under test (`--tls`): a throwaway CA and a server
//! certificate for `127.0.0.1`, written as PEM files, and the client side
//! that trusts only that CA. The same pieces serve the echo floor, so the
//! ratio compares TLS with TLS.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_tungstenite::Connector;

/// The CA of this run's `--tls` server, once created: the admin API clients
/// ([`crate::setup::Api`]) trust it (one server per run, so one CA).
static API_ROOT: OnceLock<Vec<u8>> = OnceLock::new();

/// The CA (PEM) the API clients must trust, if the server speaks TLS.
pub fn api_root() -> Option<&'static [u8]> {
    API_ROOT.get().map(Vec::as_slice)
}

/// PEM files of the throwaway PKI and a client configuration trusting it.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The server certificate (PEM), signed by the CA.
    pub cert_path: PathBuf,
    /// The server's private key (PEM).
    pub key_path: PathBuf,
    /// The CA certificate (PEM), the only root the clients trust.
    pub ca_pem: Vec<u8>,
    client: Arc<rustls::ClientConfig>,
}

impl Pki {
    /// Creates a CA and a server certificate for `127.0.0.1` in `dir`.
    ///
    /// # Errors
    /// If key generation, signing or writing fails.
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        crate::init_crypto();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "picket-loadgen CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "picket-server");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let cert_path = dir.join("server.pem");
        let key_path = dir.join("server-key.pem");
        std::fs::write(&cert_path, cert.pem()).context("writing server.pem")?;
        std::fs::write(&key_path, key.serialize_pem()).context("writing server-key.pem")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let _ = API_ROOT.set(ca_cert.pem().into_bytes());
        Ok(Pki {
            cert_path,
            key_path,
            ca_pem: ca_cert.pem().into_bytes(),
            client: Arc::new(client),
        })
    }

    /// The WebSocket clients' connector (one shared configuration: session
    /// resumption state is shared, as it would be in one real agent process).
    pub fn connector(&self) -> Connector {
        Connector::Rustls(self.client.clone())
    }

    /// The server side, for the echo floor.
    ///
    /// # Errors
    /// If the PEM files cannot be read.
    pub fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        acceptor(&self.cert_path, &self.key_path)
    }
}

/// A TLS acceptor from PEM files (the echo server's, TLS 1.2 and 1.3 like
/// the Picket server's).
///
/// # Errors
/// If the files are unreadable or not a certificate and key.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    crate::init_crypto();
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .context("no private key in the PEM file")?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
