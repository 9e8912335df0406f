//! The one rustls configuration shared by the HTTP requests (reqwest) and the WebSocket
//! (tokio-tungstenite): Mozilla's root certificates (`webpki-roots`), extra roots, and an optional
//! client certificate for mutual TLS.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, Kind};

fn builder_error(message: String, source: impl Into<crate::error::BoxError>) -> Error {
    Error::with_source(Kind::Builder, message, source)
}

/// Reads every certificate of a PEM bundle.
pub(crate) fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| builder_error(format!("Invalid PEM {what}: {err}"), err))?;
    if certs.is_empty() {
        return Err(Error::new(
            Kind::Builder,
            format!("Invalid PEM {what}: no CERTIFICATE block found."),
        ));
    }
    Ok(certs)
}

/// Builds the client configuration.
pub(crate) fn client_config(
    extra_roots: &[Vec<u8>],
    identity: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for pem in extra_roots {
        for cert in certificates(pem, "root certificate")? {
            roots
                .add(cert)
                .map_err(|err| builder_error(format!("Invalid root certificate: {err}"), err))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| builder_error(format!("TLS configuration failed: {err}"), err))?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain_pem, key_pem)) => {
            let chain = certificates(chain_pem, "client certificate chain")?;
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
                builder_error(format!("Invalid PEM client private key: {err}"), err)
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| builder_error(format!("Invalid client certificate: {err}"), err))?
        }
    };
    Ok(Arc::new(config))
}
