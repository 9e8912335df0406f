//! Every transport × protocol (Server-Sent Events: JSON only) against an in-process
//! `signalr-server` hub: invoke, send, server-to-client streams and their cancellation, upload
//! streams, client results, server errors, stop.

mod common;

use common::{Event, TestServer, next, probe, record_events, within};
use futures_util::StreamExt;
use serde_json::{Value, json};
use signalr_hub_client::{
    ClientStream, HubConnectionBuilder, HubConnectionState, HubProtocol, TransportType,
};
use signalr_server::error::ClientResultError;
use tokio::sync::mpsc;

async fn exercise(transport: TransportType, protocol: HubProtocol) {
    let (probe, mut reports) = probe();
    let server = TestServer::start(probe).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_transport(transport)
        .with_protocol(protocol)
        .with_automatic_reconnect()
        .build()
        .expect("build");
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    let mut events = record_events(&connection);

    // Handlers are matched case-insensitively (docs/protocol.md, "Method names").
    let (tx, mut messages) = mpsc::unbounded_channel();
    let _receive = connection.on("receivemessage", move |(user, text): (String, String)| {
        let _ = tx.send((user, text));
    });
    let answer = connection.on("GetNumber", |(n,): (i64,)| Some(n * 2));

    within("start", connection.start()).await.expect("start");
    assert_eq!(connection.state(), HubConnectionState::Connected);
    let id = connection.connection_id().expect("a connection id");

    // The server sees the transport and protocol we asked for.
    let on_server: String = connection.invoke("ConnectionId", ()).await.expect("id");
    assert_eq!(on_server, id);
    let name: String = connection.invoke("Transport", ()).await.expect("transport");
    assert_eq!(name, transport.name());
    let name: String = connection.invoke("Protocol", ()).await.expect("protocol");
    assert_eq!(name, protocol.name());

    // invoke
    let sum: i64 = connection.invoke("Add", (2, 3)).await.expect("Add");
    assert_eq!(sum, 5);
    let value = json!({"list": [1, "x", null, 2.5], "nested": {"flag": true}, "text": "é\n\u{1e}"});
    let echoed: Value = connection
        .invoke("Echo", (value.clone(),))
        .await
        .expect("Echo");
    assert_eq!(echoed, value);
    // `()` ignores whatever the method returns.
    let (): () = connection.invoke("Add", (1, 1)).await.expect("Add as ()");

    // send: the broadcast comes back through the handler.
    within("send", connection.send("SendMessage", ("ann", "hello")))
        .await
        .expect("send");
    assert_eq!(
        next("ReceiveMessage", &mut messages).await,
        ("ann".to_owned(), "hello".to_owned())
    );

    // Server-to-client stream.
    let items: Vec<u32> = within(
        "Count stream",
        connection
            .stream::<u32>("Count", (5,))
            .await
            .expect("stream")
            .map(|item| item.expect("item"))
            .collect(),
    )
    .await;
    assert_eq!(items, [1, 2, 3, 4, 5]);

    // Dropping a stream cancels it on the server.
    let mut ticks = connection.stream::<u64>("Ticks", ()).await.expect("Ticks");
    assert_eq!(
        within("tick", ticks.next())
            .await
            .expect("item")
            .expect("ok"),
        0
    );
    assert_eq!(
        within("tick", ticks.next())
            .await
            .expect("item")
            .expect("ok"),
        1
    );
    drop(ticks);
    assert_eq!(
        next("server-side cancellation", &mut reports).await,
        "cancelled"
    );

    // Upload streams (docs/protocol.md, "Client-to-server streams").
    let total: i64 = connection
        .invoke(
            "Sum",
            (ClientStream::new(futures_util::stream::iter(vec![
                1i64, 2, 3, 4,
            ])),),
        )
        .await
        .expect("Sum");
    assert_eq!(total, 10);
    let joined: String = connection
        .invoke(
            "Collect",
            (
                "p:",
                ClientStream::new(futures_util::stream::iter(["a", "b"])),
            ),
        )
        .await
        .expect("Collect");
    assert_eq!(joined, "p:a,b");
    assert_eq!(next("item a", &mut reports).await, "item a");
    assert_eq!(next("item b", &mut reports).await, "item b");
    // An upload stream failing on the client ends with a Completion carrying its error.
    let failing = futures_util::stream::iter(vec![Ok("x"), Err("broken pipe")]);
    let err = connection
        .invoke::<String>("Collect", ("p:", ClientStream::try_new(failing)))
        .await
        .expect_err("the server method fails with the stream's error");
    assert!(err.is_server_error(), "{err:?}");
    assert_eq!(
        err.to_string(),
        "An unexpected error occurred invoking 'Collect' on the server. HubException: broken pipe"
    );
    // An upload stream inside a streaming call.
    let sums: Vec<i64> = within(
        "StreamSum",
        connection
            .stream::<i64>(
                "StreamSum",
                (ClientStream::new(futures_util::stream::iter(vec![
                    1i64, 2, 3,
                ])),),
            )
            .await
            .expect("StreamSum")
            .map(|item| item.expect("item"))
            .collect(),
    )
    .await;
    assert_eq!(sums, [1, 3, 6]);

    // Client results (docs/protocol.md, "Client results"): from outside the hub, and from a hub method.
    let clients = server.hub.context().clients();
    let doubled = within(
        "client result",
        clients.client(id.clone()).invoke::<i64>("GetNumber", (21,)),
    )
    .await;
    assert_eq!(doubled, Ok(42));
    let via_hub: i64 = connection
        .invoke("AskCaller", ("getnumber", 5))
        .await
        .expect("AskCaller");
    assert_eq!(via_hub, 10);
    let missing = within(
        "client result without handler",
        clients.client(id.clone()).invoke::<i64>("NoSuchMethod", ()),
    )
    .await;
    assert_eq!(
        missing,
        Err(ClientResultError::Client(
            "Client didn't provide a result.".to_owned()
        ))
    );

    // Dropping the subscription removes the handler: the same call now gets no result.
    drop(answer);
    let removed = within(
        "client result after removal",
        clients.client(id.clone()).invoke::<i64>("GetNumber", (21,)),
    )
    .await;
    assert_eq!(
        removed,
        Err(ClientResultError::Client(
            "Client didn't provide a result.".to_owned()
        ))
    );

    // Server errors carry the server's text.
    let err = connection
        .invoke::<()>("Fail", ("boom",))
        .await
        .expect_err("Fail fails");
    assert!(err.is_server_error());
    assert_eq!(
        err.to_string(),
        "An unexpected error occurred invoking 'Fail' on the server. HubException: boom"
    );
    let err = connection
        .invoke::<String>("Add", (1, 2))
        .await
        .expect_err("an i64 is not a String");
    assert!(err.is_decode(), "{err:?}");

    // Still healthy after all that.
    let sum: i64 = connection.invoke("Add", (20, 22)).await.expect("Add");
    assert_eq!(sum, 42);

    // The server's Close message (docs/protocol.md, "Close message"): allowReconnect true -> reconnect ...
    connection
        .send("CloseMe", ("restarting", true))
        .await
        .expect("CloseMe");
    match next("reconnecting", &mut events).await {
        Event::Reconnecting(err, HubConnectionState::Reconnecting) => {
            assert_eq!(
                err.to_string(),
                "Server returned an error on close: restarting"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let new_id = match next("reconnected", &mut events).await {
        Event::Reconnected(Some(new_id), HubConnectionState::Connected) => new_id,
        other => panic!("unexpected {other:?}"),
    };
    assert_ne!(new_id, id);
    let name: String = connection.invoke("Transport", ()).await.expect("transport");
    assert_eq!(name, transport.name());
    // ... allowReconnect false -> closed for good, despite the retry policy.
    connection
        .send("CloseMe", ("bye", false))
        .await
        .expect("CloseMe");
    match next("closed", &mut events).await {
        Event::Closed(Some(err), HubConnectionState::Disconnected) => {
            assert!(err.is_server_close());
            assert_eq!(err.to_string(), "Server returned an error on close: bye");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Started again, then stopped by us.
    within("restart", connection.start())
        .await
        .expect("restart");
    let sum: i64 = connection.invoke("Add", (2, 2)).await.expect("Add");
    assert_eq!(sum, 4);
    within("stop", connection.stop()).await;
    assert!(matches!(
        next("closed", &mut events).await,
        Event::Closed(None, HubConnectionState::Disconnected)
    ));
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
    assert_eq!(connection.connection_id(), None);
    let err = connection
        .invoke::<i64>("Add", (1, 2))
        .await
        .expect_err("not connected");
    assert!(err.is_closed());
    assert_eq!(
        err.to_string(),
        "Cannot send data if the connection is not in the 'Connected' State."
    );
    // The server has let the connection go.
    within("server-side close", async {
        while server.hub.context().connection_count() != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn websockets_json() {
    exercise(TransportType::WebSockets, HubProtocol::Json).await;
}

#[tokio::test]
async fn websockets_messagepack() {
    exercise(TransportType::WebSockets, HubProtocol::MessagePack).await;
}

#[tokio::test]
async fn server_sent_events_json() {
    exercise(TransportType::ServerSentEvents, HubProtocol::Json).await;
}

#[tokio::test]
async fn long_polling_json() {
    exercise(TransportType::LongPolling, HubProtocol::Json).await;
}

#[tokio::test]
async fn long_polling_messagepack() {
    exercise(TransportType::LongPolling, HubProtocol::MessagePack).await;
}

#[tokio::test]
async fn messagepack_is_never_tried_over_server_sent_events() {
    let (probe, _reports) = probe();
    let server = TestServer::start(probe).await;
    let connection = HubConnectionBuilder::new()
        .with_url(server.url())
        .with_transport(TransportType::ServerSentEvents)
        .with_protocol(HubProtocol::MessagePack)
        .build()
        .expect("build");
    let err = within("start", connection.start())
        .await
        .expect_err("SSE cannot carry MessagePack");
    assert!(err.is_transport());
    assert_eq!(
        err.to_string(),
        "Unable to connect to the server with any of the available transports. \
         WebSockets failed: 'WebSockets' is disabled by the client. \
         ServerSentEvents failed: 'ServerSentEvents' does not support Binary. \
         LongPolling failed: 'LongPolling' is disabled by the client."
    );
    assert_eq!(connection.state(), HubConnectionState::Disconnected);
}
