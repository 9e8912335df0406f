//! A hub over HTTPS and `wss://`, with rustls: axum's `serve` on a listener that does the TLS
//! handshake of each accepted connection.
//!
//! ```sh
//! cargo run -p signalr-server --example tls                    # a fresh self-signed certificate
//! cargo run -p signalr-server --example tls -- cert.pem key.pem
//! ```
//!
//! Listens on https://127.0.0.1:5001 (`PORT=0` picks a free port), hub at `/chat`. With the
//! self-signed certificate, clients must trust it (browsers: accept it once at
//! https://127.0.0.1:5001/chat/negotiate). `signalr_server::serve` (Kestrel's request limits)
//! takes a plain `TcpListener`; behind a TLS-terminating proxy use it instead of this.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use signalr_server::{Hub, HubCallerContext};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

type Error = Box<dyn std::error::Error>;

/// The certificate chain and key: from PEM files when given, else self-signed for localhost.
fn certificate() -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cert, key] = args.as_slice() {
        let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<_, _>>()?;
        return Ok((chain, PrivateKeyDer::from_pem_file(key)?));
    }
    let self_signed = rcgen::generate_simple_self_signed(["localhost".into(), "127.0.0.1".into()])?;
    let key = PrivatePkcs8KeyDer::from(self_signed.key_pair.serialize_der());
    Ok((vec![self_signed.cert.der().clone()], key.into()))
}

/// Accepted TLS connections, handshaken in their own tasks (a slow handshake holds no one up).
struct TlsListener {
    address: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let address = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, accepted) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    if let Ok(Ok(tls)) = handshake.await {
                        let _ = sender.send((tls, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { address, accepted })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.address)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (chain, key) = certificate()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()]; // axum::serve speaks HTTP/1.1 here

    let chat = Hub::builder()
        .method(
            "Echo",
            |_: HubCallerContext, text: String| async move { text },
        )
        .build();
    let app = Router::new().nest("/chat", chat.router());

    let port = std::env::var("PORT").unwrap_or_else(|_| "5001".into());
    let listener = TlsListener::new(
        TcpListener::bind(format!("127.0.0.1:{port}")).await?,
        config,
    )?;
    println!("Listening on https://{}", listener.address);
    axum::serve(listener, app).await?;
    Ok(())
}
