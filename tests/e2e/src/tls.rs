//! A throwaway certificate authority and a server certificate for
//! `localhost`/`127.0.0.1`, written as PEM files. The agent trusts the CA via
//! its `ca_bundle` setting: the same path a customer with a private CA uses.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files of a test PKI.
pub struct TestPki {
    /// The CA certificate (give it to clients as their trust root).
    pub ca_cert: PathBuf,
    /// The server certificate, signed by the CA.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

/// Creates a CA and a server certificate in `dir`.
///
/// # Errors
/// If key generation, signing or writing fails.
pub fn make_pki(dir: &Path) -> anyhow::Result<TestPki> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Picket test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "picket-server");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    let pki = TestPki {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
    };
    std::fs::write(&pki.ca_cert, ca_cert.pem()).context("writing ca.pem")?;
    std::fs::write(&pki.server_cert, cert.pem()).context("writing server.pem")?;
    std::fs::write(&pki.server_key, key.serialize_pem()).context("writing server-key.pem")?;
    Ok(pki)
}
