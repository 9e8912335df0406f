//! The TLS configuration of a connection, shared by its HTTP requests (reqwest) and its WebSocket
//! (tokio-tungstenite): the backend the builder chose (rustls or native-tls, by cargo feature),
//! extra root certificates, and an optional client certificate for mutual TLS.

#[cfg(feature = "rustls")]
use std::sync::Arc;

use reqwest::Url;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Kind};

/// The TLS library of a connection's `https` and `wss` requests, chosen with
/// [`HubConnectionBuilder::tls_backend`](crate::HubConnectionBuilder::tls_backend) (and the classic
/// builder's method of the same name).
///
/// Each variant exists with its cargo feature: `rustls` (on by default) and `native-tls`. When the
/// builder names none, rustls is used if its feature is on, else native-tls. The enum is
/// `non_exhaustive` because features add variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsBackend {
    /// rustls (with the ring provider) and Mozilla's root certificates compiled in
    /// (`webpki-roots`): the same roots on every platform, no system library.
    #[cfg(feature = "rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    Rustls,
    /// The `native-tls` crate: OpenSSL on Linux, Secure Transport on macOS, SChannel on Windows,
    /// with the operating system's root certificates.
    #[cfg(feature = "native-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "native-tls")))]
    NativeTls,
}

/// The backend used when the builder names none.
#[cfg(feature = "rustls")]
const DEFAULT_BACKEND: Option<TlsBackend> = Some(TlsBackend::Rustls);
#[cfg(all(feature = "native-tls", not(feature = "rustls")))]
const DEFAULT_BACKEND: Option<TlsBackend> = Some(TlsBackend::NativeTls);

/// The builder's TLS options, read by [`TlsConfig::new`] at `build()`.
#[derive(Default)]
pub(crate) struct TlsOptions {
    pub backend: Option<TlsBackend>,
    /// Each one PEM (one or more certificates) or one DER certificate.
    pub roots: Vec<Vec<u8>>,
    /// PEM certificate chain and PEM private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The TLS configuration a built connection uses.
#[derive(Clone)]
pub(crate) struct TlsConfig(Backend);

#[derive(Clone)]
enum Backend {
    #[cfg(feature = "rustls")]
    Rustls(Arc<rustls::ClientConfig>),
    #[cfg(feature = "native-tls")]
    Native(native_tls::TlsConnector),
    /// Built without a TLS feature: `https`/`wss` URLs are refused.
    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    None,
}

fn builder_error(message: String, source: impl Into<crate::error::BoxError>) -> Error {
    Error::with_source(Kind::Builder, message, source)
}

impl TlsConfig {
    /// Reads the certificates and the key with the chosen backend.
    pub(crate) fn new(options: &TlsOptions) -> Result<TlsConfig, Error> {
        // Without a TLS feature the options are only checked for syntax: they are never used.
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        {
            for root in &options.roots {
                root_certificates(root)?;
            }
            if let Some((chain, key)) = &options.identity {
                certificates(chain, "client certificate chain")?;
                private_key(key)?;
            }
            Ok(TlsConfig(Backend::None))
        }
        #[cfg(any(feature = "rustls", feature = "native-tls"))]
        match options.backend.or(DEFAULT_BACKEND) {
            #[cfg(feature = "rustls")]
            Some(TlsBackend::Rustls) => Ok(TlsConfig(Backend::Rustls(rustls_config(options)?))),
            #[cfg(feature = "native-tls")]
            Some(TlsBackend::NativeTls) => Ok(TlsConfig(Backend::Native(native_config(options)?))),
            None => unreachable!("a TLS feature is on, so there is a default backend"),
        }
    }

    /// The HTTP client of the connection; `pooled: false` opens a new socket for every request.
    pub(crate) fn http_client(&self, pooled: bool) -> Result<reqwest::Client, Error> {
        let mut builder = reqwest::Client::builder();
        match &self.0 {
            #[cfg(feature = "rustls")]
            Backend::Rustls(config) => {
                builder = builder.use_preconfigured_tls((**config).clone());
            }
            #[cfg(feature = "native-tls")]
            Backend::Native(connector) => {
                builder = builder.use_preconfigured_tls(connector.clone())
            }
            #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
            Backend::None => {}
        }
        if !pooled {
            builder = builder.pool_max_idle_per_host(0);
        }
        builder.build().map_err(|err| {
            Error::with_source(
                Kind::Builder,
                format!("Cannot build the HTTP client: {err}"),
                err,
            )
        })
    }

    /// The connector of a WebSocket to a `wss` (`secure`) or `ws` URL.
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    pub(crate) fn websocket_connector(&self, secure: bool) -> tokio_tungstenite::Connector {
        use tokio_tungstenite::Connector;
        if !secure {
            return Connector::Plain;
        }
        match &self.0 {
            #[cfg(feature = "rustls")]
            Backend::Rustls(config) => Connector::Rustls(config.clone()),
            #[cfg(feature = "native-tls")]
            Backend::Native(connector) => Connector::NativeTls(connector.clone()),
        }
    }

    /// Refuses an `https`/`wss` URL when the crate was built without a TLS feature (the error is
    /// of `kind`); every URL is fine otherwise.
    pub(crate) fn check_url(&self, url: &Url, kind: Kind) -> Result<(), Error> {
        #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
        if matches!(url.scheme(), "https" | "wss") {
            return Err(Error::new(
                kind,
                format!(
                    "Cannot connect to '{url}': signalr-hub-client was built without TLS (enable \
                     its `rustls` or `native-tls` feature)."
                ),
            ));
        }
        let _ = (self, url, kind);
        Ok(())
    }
}

/// Reads every certificate of a PEM bundle.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
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

/// The certificates of one root option: one DER certificate (an ASN.1 SEQUENCE, first byte 0x30,
/// no PEM header) or PEM.
fn root_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let is_pem = bytes.windows(11).any(|window| window == b"-----BEGIN ");
    if bytes.first() == Some(&0x30) && !is_pem {
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    certificates(bytes, "root certificate")
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|err| builder_error(format!("Invalid PEM client private key: {err}"), err))
}

#[cfg(feature = "rustls")]
fn rustls_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, Error> {
    use rustls::{ClientConfig, RootCertStore};

    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in &options.roots {
        for cert in root_certificates(root)? {
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
    let config = match &options.identity {
        None => builder.with_no_client_auth(),
        Some((chain_pem, key_pem)) => {
            let chain = certificates(chain_pem, "client certificate chain")?;
            let key = private_key(key_pem)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| builder_error(format!("Invalid client certificate: {err}"), err))?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(feature = "native-tls")]
fn native_config(options: &TlsOptions) -> Result<native_tls::TlsConnector, Error> {
    let mut builder = native_tls::TlsConnector::builder();
    // As rustls: TLS 1.2 and 1.3 only (native-tls would accept 1.0).
    builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
    for root in &options.roots {
        for cert in root_certificates(root)? {
            let cert = native_tls::Certificate::from_der(&cert)
                .map_err(|err| builder_error(format!("Invalid root certificate: {err}"), err))?;
            builder.add_root_certificate(cert);
        }
    }
    if let Some((chain_pem, key_pem)) = &options.identity {
        certificates(chain_pem, "client certificate chain")?;
        let key = pkcs8_block(key_pem)?;
        let identity = native_tls::Identity::from_pkcs8(chain_pem, key)
            .map_err(|err| builder_error(format!("Invalid client certificate: {err}"), err))?;
        builder.identity(identity);
    }
    builder
        .build()
        .map_err(|err| builder_error(format!("TLS configuration failed: {err}"), err))
}

/// The PKCS#8 PEM block (`BEGIN PRIVATE KEY`) of a key file, the one key format native-tls reads;
/// a PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`) key is refused.
#[cfg(feature = "native-tls")]
fn pkcs8_block(pem: &[u8]) -> Result<&[u8], Error> {
    const BEGIN: &[u8] = b"-----BEGIN PRIVATE KEY-----";
    const END: &[u8] = b"-----END PRIVATE KEY-----";
    let format = match private_key(pem)? {
        PrivateKeyDer::Pkcs8(_) => None,
        PrivateKeyDer::Pkcs1(_) => Some("PKCS#1 (BEGIN RSA PRIVATE KEY)"),
        PrivateKeyDer::Sec1(_) => Some("SEC1 (BEGIN EC PRIVATE KEY)"),
        _ => Some("this format"),
    };
    let find = |needle: &[u8], from: usize| {
        pem[from..]
            .windows(needle.len())
            .position(|window| window == needle)
            .map(|at| from + at)
    };
    let block = find(BEGIN, 0).and_then(|start| {
        let end = find(END, start)?;
        Some(&pem[start..end + END.len()])
    });
    match (format, block) {
        (None, Some(block)) => Ok(block),
        (format, _) => Err(Error::new(
            Kind::Builder,
            format!(
                "Invalid client private key for native-tls: it reads PKCS#8 keys (BEGIN PRIVATE \
                 KEY), not {}. Convert the key with `openssl pkcs8 -topk8 -nocrypt -in key.pem`, \
                 or use the rustls backend.",
                format.unwrap_or("this format")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_A_KEY: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";

    #[test]
    fn roots_are_pem_or_der() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x00];
        assert_eq!(root_certificates(&der).expect("der").len(), 1);
        let err = root_certificates(b"not pem").expect_err("neither");
        assert!(err.is_builder(), "{err}");
        assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
    }

    #[cfg(feature = "native-tls")]
    #[test]
    fn native_tls_needs_pkcs8_keys() {
        let err = pkcs8_block(NOT_A_KEY.as_bytes()).expect_err("PKCS#1");
        assert!(err.is_builder(), "{err}");
        assert!(
            err.to_string().contains("PKCS#1 (BEGIN RSA PRIVATE KEY)"),
            "{err}"
        );
        let pem = "comment\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\ntrailer";
        assert_eq!(
            pkcs8_block(pem.as_bytes()).expect("PKCS#8"),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        );
    }

    #[test]
    fn an_unreadable_key_fails_with_every_backend() {
        assert!(private_key(NOT_A_KEY.as_bytes()).is_ok(), "PEM syntax only");
        let err = private_key(b"no key").expect_err("no key");
        assert!(err.is_builder(), "{err}");
    }

    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    #[test]
    fn without_tls_https_is_refused() {
        let config = TlsConfig::new(&TlsOptions::default()).expect("config");
        let https = Url::parse("https://example.com/hub").expect("url");
        let err = config
            .check_url(&https, Kind::Negotiate)
            .expect_err("https");
        assert!(err.is_negotiate(), "{err}");
        assert!(err.to_string().contains("without TLS"), "{err}");
        let http = Url::parse("http://example.com/hub").expect("url");
        config.check_url(&http, Kind::Negotiate).expect("http");
    }

    #[cfg(not(any(feature = "rustls", feature = "native-tls")))]
    #[tokio::test]
    async fn without_tls_an_https_start_fails_and_http_is_tried() {
        use crate::{HubConnectionBuilder, TransportType};

        let https = HubConnectionBuilder::new()
            .with_url("https://127.0.0.1:1/hub")
            .build()
            .expect("build");
        let err = https.start().await.expect_err("https");
        assert!(err.is_negotiate(), "{err:?}");
        assert!(err.to_string().contains("built without TLS"), "{err}");
        let wss = HubConnectionBuilder::new()
            .with_url("wss://127.0.0.1:1/hub")
            .with_transport(TransportType::WebSockets)
            .skip_negotiation(true)
            .build()
            .expect("build");
        let err = wss.start().await.expect_err("wss");
        assert!(err.is_transport(), "{err:?}");
        assert!(err.to_string().contains("built without TLS"), "{err}");
        let classic = crate::classic::ClassicHubConnectionBuilder::new("https://127.0.0.1:1/")
            .build()
            .expect("build");
        let err = classic.start().await.expect_err("classic https");
        assert!(err.to_string().contains("built without TLS"), "{err}");
        // Nothing listens on port 1: http gets as far as the socket.
        let http = HubConnectionBuilder::new()
            .with_url("http://127.0.0.1:1/hub")
            .build()
            .expect("build");
        let err = http.start().await.expect_err("nothing listens");
        assert!(!err.to_string().contains("TLS"), "{err}");
    }
}
