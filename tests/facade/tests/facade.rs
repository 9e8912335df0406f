//! A `#[signalr::hub]` with a `#[signalr::hub_client]`, served with `signalr::serve` and called
//! with `signalr::client`, in a package that depends on nothing of this project but `signalr`:
//! the macros must expand to `::signalr::server` paths (a `::signalr_server` path would not
//! resolve here), over both hub protocols.

use futures_util::StreamExt;
use signalr::client::{HubConnection, HubConnectionBuilder};
use signalr::{HubCallerContext, HubError, HubProtocol, hub, hub_client};

#[hub_client]
trait ChatClient {
    async fn receive_message(&self, user: String, text: String);
}

#[derive(Default)]
struct ChatHub;

#[hub]
impl ChatHub {
    async fn send_message(
        &self,
        ctx: HubCallerContext,
        user: String,
        text: String,
    ) -> Result<(), HubError> {
        ctx.clients().all().receive_message(user, text).await?;
        Ok(())
    }

    async fn add(&self, _ctx: HubCallerContext, a: i64, b: i64) -> i64 {
        a + b
    }

    async fn fail(&self, _ctx: HubCallerContext) -> Result<(), HubError> {
        Err(HubError::new("no"))
    }

    #[hub_method(name = "Countdown")]
    async fn count_down(
        &self,
        _ctx: HubCallerContext,
        from: u32,
    ) -> impl futures_util::Stream<Item = u32> + use<> {
        futures_util::stream::iter((0..=from).rev())
    }
}

/// The hub on a free loopback port; returns its URL.
async fn start_hub() -> String {
    let app = axum::Router::new().nest("/chat", ChatHub::hub_builder().build().router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let url = format!(
        "http://{}/chat",
        listener.local_addr().expect("local address")
    );
    tokio::spawn(async move { signalr::serve(listener, app).await });
    url
}

async fn connect(url: &str, protocol: HubProtocol) -> HubConnection {
    let connection = HubConnectionBuilder::new()
        .with_url(url)
        .with_protocol(protocol)
        .build()
        .expect("a valid client configuration");
    connection.start().await.expect("the client connects");
    connection
}

#[tokio::test]
async fn a_macro_hub_through_the_facade_answers_the_facade_client() {
    let url = start_hub().await;
    for protocol in [HubProtocol::Json, HubProtocol::MessagePack] {
        let connection = connect(&url, protocol).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let _subscription =
            connection.on("ReceiveMessage", move |(user, text): (String, String)| {
                let _ = tx.send(format!("{user}: {text}"));
            });

        let sum: i64 = connection.invoke("Add", (2, 3)).await.expect("Add answers");
        assert_eq!(sum, 5, "{protocol:?}");

        connection
            .invoke::<()>("SendMessage", ("ann", "hello"))
            .await
            .expect("SendMessage completes");
        let received = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("ReceiveMessage arrives within 5 s");
        assert_eq!(received.as_deref(), Some("ann: hello"), "{protocol:?}");

        let error = connection
            .invoke::<()>("Fail", ())
            .await
            .expect_err("Fail completes with an error");
        assert_eq!(
            error.to_string(),
            "An unexpected error occurred invoking 'Fail' on the server. HubException: no",
            "{protocol:?}"
        );

        let items: Vec<u32> = connection
            .stream::<u32>("Countdown", (3,))
            .await
            .expect("Countdown starts")
            .map(|item| item.expect("a stream item"))
            .collect()
            .await;
        assert_eq!(items, [3, 2, 1, 0], "{protocol:?}");

        connection.stop().await;
    }
}
