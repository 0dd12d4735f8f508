//! rustls configurations, with the ring provider chosen explicitly everywhere (no process-wide
//! default): the inbound server config from a receive connector's PEM files (errors name the
//! file and the fix), and the outbound client configs (verified for smart hosts, permissive
//! for opportunistic MX delivery, as RFC 7435 opportunistic security allows). TLS 1.2 and 1.3
//! only: rustls implements nothing older. The byte plumbing over io_uring is in
//! `runtime::stream`.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::TlsFiles;

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server config of a receive connector. The error says which file and what to do.
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    reloadable_server_config(files).map(|(config, _)| config)
}

/// Reads and checks a connector's certificate chain and key. Every error names the file (or
/// both) and says what to do; check-config and SIGHUP print it as is.
fn load_certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = files.cert.display();
    let key_path = files.key.display();
    let pem = std::fs::read(&files.cert).map_err(|e| {
        format!("cannot read certificate file {cert_path}: {e}; check the path and that ringrelay's user may read it")
    })?;
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| {
            format!(
                "{cert_path} is not valid PEM ({e}); it must hold the certificate chain as -----BEGIN CERTIFICATE----- \
                 blocks, leaf first: replace it with the PEM file your CA issued (fullchain.pem with certbot)"
            )
        })?;
    if chain.is_empty() {
        let hint = if PrivateKeyDer::from_pem_slice(&pem).is_ok() {
            " (it holds a private key: are cert and key swapped?)"
        } else {
            ""
        };
        return Err(format!(
            "{cert_path} holds no certificate{hint}; point tls.cert at the PEM certificate chain \
             (-----BEGIN CERTIFICATE----- blocks, leaf first)"
        ));
    }
    // Parse the leaf now: rustls would refuse it only at the first handshake.
    rustls::server::ParsedCertificate::try_from(&chain[0]).map_err(|e| {
        format!(
            "the first certificate in {cert_path} cannot be parsed ({e}); it must be the server's own \
             certificate in X.509 DER inside PEM: replace the file with the one your CA issued"
        )
    })?;
    let key_pem = std::fs::read(&files.key).map_err(|e| {
        format!("cannot read key file {key_path}: {e}; check the path and that ringrelay's user may read it")
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let hint = if CertificateDer::pem_slice_iter(&key_pem).next().is_some() {
            "; it holds a certificate: are cert and key swapped?"
        } else {
            ""
        };
        format!(
            "{key_path} holds no private key ({e}{hint}); point tls.key at the certificate's private key as a \
             PEM file (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        )
    })?;
    let provider = provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "{key_path} holds a private key of a type ringrelay cannot use ({e}); use an RSA (2048 bits or \
             more), ECDSA P-256/P-384 or Ed25519 key, e.g. `openssl genpkey -algorithm EC -pkeyopt \
             ec_paramgen_curve:P-256`, and have the certificate issued for it"
        )
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "the key in {key_path} does not belong to the certificate in {cert_path}; put the key the \
                 certificate was issued for in tls.key (or the matching certificate in tls.cert), e.g. compare \
                 `openssl x509 -noout -pubkey -in CERT` with `openssl pkey -pubout -in KEY`"
            ));
        }
        Err(e) => {
            return Err(format!(
                "{cert_path} and {key_path} cannot be used together ({e}); check that tls.cert is the server's \
                 certificate chain and tls.key its private key"
            ));
        }
    }
    Ok(Arc::new(certified))
}

/// A receive connector's certificate, replaceable while the relay runs (SIGHUP): handshakes
/// started after `reload` present the new certificate; sessions already under TLS keep theirs.
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Reads the files again; on any error the current certificate stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = load_certified_key(&self.files)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The certificate file.
    pub fn cert_file(&self) -> &Path {
        &self.files.cert
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // One uncontended read lock per TLS handshake (which costs a millisecond of crypto).
        Some(Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// The server config of a receive connector, with its certificate behind a `ReloadableCert`.
pub fn reloadable_server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ReloadableCert>), String> {
    let key = load_certified_key(files)?;
    let cert = Arc::new(ReloadableCert { files: files.clone(), current: RwLock::new(key) });
    let resolver: Arc<dyn ResolvesServerCert> = Arc::clone(&cert) as Arc<dyn ResolvesServerCert>;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    Ok((Arc::new(config), cert))
}

/// Reads extra trust anchors (PEM) for smart hosts.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// A client config that verifies the server's certificate against the system's trust store
/// plus `extra_ca` (smart hosts; `tls = "required"`).
pub fn verified_client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // Skip the odd unparsable system certificate rather than fail the whole store.
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        for cert in load_ca_file(path)? {
            roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client config for opportunistic TLS to MX hosts: encrypts, checks handshake signatures,
/// but accepts any certificate (RFC 7435: better than plaintext, which is the alternative).
pub fn opportunistic_client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(AcceptAnyCertificate { algorithms: provider.signature_verification_algorithms });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth());
    match config {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("the ring provider supports the default protocol versions: {e}"),
    }
}

/// The name to present in SNI and to verify: a DNS name, or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))
}

/// Opportunistic verifier: any certificate, but a valid handshake signature with its key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
