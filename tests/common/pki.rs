//! Test certificates made at run time with rcgen: a CA and a leaf it signed (distinct common
//! names, or OpenSSL calls the leaf self-signed), as PEM files and as a rustls server config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and one leaf certificate.
pub struct Pki {
    /// CA certificate, PEM file.
    pub ca_file: PathBuf,
    /// Leaf chain (leaf, CA), PEM file.
    pub cert_file: PathBuf,
    /// Leaf key, PEM file.
    pub key_file: PathBuf,
    /// DER forms.
    pub ca_der: CertificateDer<'static>,
    pub leaf_der: CertificateDer<'static>,
    pub leaf_key: PrivateKeyDer<'static>,
}

impl Pki {
    /// Makes a CA and a leaf for `names` (DNS names or IP addresses), written under `dir`.
    pub fn new(dir: &Path, names: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "ringrelay test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, names[0]);
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let ca_file = dir.join("ca.pem");
        let cert_file = dir.join("cert.pem");
        let key_file = dir.join("key.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        Pki {
            ca_file,
            cert_file,
            key_file,
            ca_der: ca.der().clone(),
            leaf_der: leaf.der().clone(),
            leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        }
    }

    /// A rustls server config presenting the leaf.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![self.leaf_der.clone(), self.ca_der.clone()], self.leaf_key.clone_key())
                .unwrap(),
        )
    }

    /// A rustls client config trusting the CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}
