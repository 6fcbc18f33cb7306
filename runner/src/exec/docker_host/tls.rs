//! The TLS material of a daemon reached over TLS (`ca.pem`, `cert.pem`, `key.pem`, as the
//! Docker CLI names them) and the rustls client configuration made of it, with the aws-lc-rs
//! provider: bollard's client uses the files itself; the BuildKit session's own connection
//! ([`crate::exec::build`]) uses [`client_config`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The three files of a TLS connection to a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA the daemon's certificate must chain to (the only root trusted).
    pub ca: PathBuf,
    /// The client certificate the daemon checks.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// The first of the files that does not exist.
    pub(super) fn check(&self) -> Result<(), PathBuf> {
        match [&self.ca, &self.cert, &self.key]
            .into_iter()
            .find(|file| !file.is_file())
        {
            Some(missing) => Err(missing.clone()),
            None => Ok(()),
        }
    }
}

/// Makes aws-lc-rs the process's rustls provider unless one is installed already (bollard's TLS
/// client asks for the process's provider; the program links no other).
pub(super) fn install_provider() {
    // An error means a provider is installed already, which is all this wants.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A rustls client configuration trusting only `files.ca` and presenting the client
/// certificate, for a connection of our own to the daemon.
pub(crate) fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let unreadable = |path: &Path, error: &dyn std::fmt::Display| {
        format!("cannot read {}: {error}", path.display())
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in
        CertificateDer::pem_file_iter(&files.ca).map_err(|error| unreadable(&files.ca, &error))?
    {
        let certificate = certificate.map_err(|error| unreadable(&files.ca, &error))?;
        roots
            .add(certificate)
            .map_err(|error| unreadable(&files.ca, &error))?;
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| unreadable(&files.cert, &error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(&files.cert, &error))?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|error| unreadable(&files.key, &error))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| error.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|error| unreadable(&files.key, &error))?;
    Ok(Arc::new(config))
}
