//! HTTPS and WSS with a private CA and mutual TLS: the in-process hub behind a rustls acceptor
//! that requires a client certificate signed by the test CA (certificates made with rcgen).
//! Every check runs with each TLS backend the crate is built with (`rustls`, `native-tls`; both
//! with `--all-features`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{hub_builder, probe, within};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use signalr_hub_client::{HubConnectionBuilder, HubProtocol, TlsBackend, TransportType};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The backends of this build.
fn backends() -> Vec<TlsBackend> {
    let backends = [
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls,
        #[cfg(feature = "native-tls")]
        TlsBackend::NativeTls,
    ];
    assert!(!backends.is_empty(), "built without a TLS backend");
    backends.to_vec()
}

struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    server_config: Arc<rustls::ServerConfig>,
    client_cert_pem: String,
    client_key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "signalr test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");

    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("server certificate");

    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client
        .distinguished_name
        .push(DnType::CommonName, "signalr test client");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client
        .signed_by(&client_key, &ca_cert, &ca_key)
        .expect("client certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("CA root");
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("client verifier");
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .expect("server config");
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Pki {
        ca_pem: ca_cert.pem(),
        ca_der: ca_cert.der().to_vec(),
        server_config: Arc::new(server_config),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// Accepts TCP connections and completes TLS handshakes on tasks of their own; hands the
/// successful ones to axum.
struct TlsListener {
    address: SocketAddr,
    streams: mpsc::UnboundedReceiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}

async fn serve_tls(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    common::init_tracing();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let acceptor = TlsAcceptor::from(config);
    let (sender, streams) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        let _ = sender.send((tls, peer));
                    }
                    Err(err) => tracing::debug!(error = %err, "TLS handshake refused"),
                }
            });
        }
    });
    let (probe, _reports) = probe();
    let app = axum::Router::new().nest("/hub", hub_builder(probe).build().router());
    tokio::spawn(async move {
        let _ = axum::serve(TlsListener { address, streams }, app).await;
    });
    address
}

#[tokio::test]
async fn mutual_tls_on_every_transport() {
    let pki = pki();
    let address = serve_tls(pki.server_config.clone()).await;
    for backend in backends() {
        for (host, transport, protocol, der_root) in [
            (
                "127.0.0.1",
                TransportType::WebSockets,
                HubProtocol::Json,
                false,
            ),
            (
                "localhost",
                TransportType::WebSockets,
                HubProtocol::MessagePack,
                true,
            ),
            (
                "127.0.0.1",
                TransportType::ServerSentEvents,
                HubProtocol::Json,
                true,
            ),
            (
                "localhost",
                TransportType::LongPolling,
                HubProtocol::MessagePack,
                false,
            ),
        ] {
            let root = if der_root {
                pki.ca_der.clone()
            } else {
                pki.ca_pem.clone().into_bytes()
            };
            let connection = HubConnectionBuilder::new()
                .with_url(format!("https://{host}:{}/hub", address.port()))
                .with_transport(transport)
                .with_protocol(protocol)
                .tls_backend(backend)
                .with_root_certificate(root)
                .with_client_certificate(pki.client_cert_pem.clone(), pki.client_key_pem.clone())
                .build()
                .expect("build");
            within("start", connection.start())
                .await
                .unwrap_or_else(|err| panic!("{backend:?}, {transport:?} over TLS: {err:?}"));
            let name: String = connection.invoke("Transport", ()).await.expect("Transport");
            assert_eq!(name, transport.name());
            let sum: i64 = connection.invoke("Add", (40, 2)).await.expect("Add");
            assert_eq!(sum, 42);
            connection.stop().await;
        }
    }
}

/// What the backend says when the server requires a client certificate the client did not
/// send, and when the server's CA is not trusted.
fn refusal_texts(backend: TlsBackend) -> (&'static str, &'static str) {
    match backend {
        #[cfg(feature = "rustls")]
        TlsBackend::Rustls => ("CertificateRequired", "UnknownIssuer"),
        #[cfg(feature = "native-tls")]
        TlsBackend::NativeTls => ("certificate required", "certificate verify failed"),
        #[allow(unreachable_patterns)]
        other => panic!("unknown backend {other:?}"),
    }
}

#[tokio::test]
async fn without_the_client_certificate_or_the_root_the_start_fails() {
    let pki = pki();
    let address = serve_tls(pki.server_config.clone()).await;
    let url = format!("https://127.0.0.1:{}/hub", address.port());
    for backend in backends() {
        let (no_certificate_text, unknown_issuer_text) = refusal_texts(backend);
        for transport in [TransportType::WebSockets, TransportType::LongPolling] {
            // WebSockets skip negotiate: the refusal comes from the WebSocket's TLS handshake.
            let skip = transport == TransportType::WebSockets;
            let check = |err: signalr_hub_client::Error, expected: &str| {
                if skip {
                    assert!(err.is_transport(), "{backend:?}: {err:?}");
                } else {
                    assert!(err.is_negotiate(), "{backend:?}: {err:?}");
                }
                assert!(err.to_string().contains(expected), "{backend:?}: {err}");
            };

            let no_certificate = HubConnectionBuilder::new()
                .with_url(url.clone())
                .with_transport(transport)
                .skip_negotiation(skip)
                .tls_backend(backend)
                .with_root_certificate(pki.ca_pem.clone())
                .build()
                .expect("build");
            let err = within("start", no_certificate.start())
                .await
                .expect_err("the server requires a client certificate");
            check(err, no_certificate_text);

            let unknown_server = HubConnectionBuilder::new()
                .with_url(url.clone())
                .with_transport(transport)
                .skip_negotiation(skip)
                .tls_backend(backend)
                .with_client_certificate(pki.client_cert_pem.clone(), pki.client_key_pem.clone())
                .build()
                .expect("build");
            let err = within("start", unknown_server.start())
                .await
                .expect_err("the server's CA is not trusted");
            check(err, unknown_issuer_text);
        }
    }
}

/// With both features and no `tls_backend` call, rustls is used (its error text shows it).
#[cfg(feature = "rustls")]
#[tokio::test]
async fn rustls_is_the_default_backend() {
    let pki = pki();
    let address = serve_tls(pki.server_config.clone()).await;
    let connection = HubConnectionBuilder::new()
        .with_url(format!("https://127.0.0.1:{}/hub", address.port()))
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("the server's CA is not trusted");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

/// native-tls reads PKCS#8 keys only: a PKCS#1 key fails `build()` with a text that says how to
/// convert it; rustls takes it.
#[cfg(feature = "native-tls")]
#[test]
fn native_tls_refuses_a_pkcs1_key_at_build() {
    let pki = pki();
    let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
    let err = HubConnectionBuilder::new()
        .with_url("https://127.0.0.1:1/hub")
        .tls_backend(TlsBackend::NativeTls)
        .with_client_certificate(pki.client_cert_pem.clone(), pkcs1)
        .build()
        .expect_err("PKCS#1 with native-tls");
    assert!(err.is_builder(), "{err:?}");
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    let err = signalr_hub_client::classic::ClassicHubConnectionBuilder::new("https://127.0.0.1:1/")
        .tls_backend(TlsBackend::NativeTls)
        .with_client_certificate(pki.client_cert_pem, pkcs1)
        .build()
        .expect_err("PKCS#1 with native-tls");
    assert!(err.is_builder(), "{err:?}");
}
