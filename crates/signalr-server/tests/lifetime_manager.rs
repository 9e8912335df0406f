//! A hub with a lifetime manager of its own (`HubBuilder::lifetime_manager`): the hub runtime
//! hands it every connect, disconnect, send, group change and client result, and its failures
//! reach hub code as `Result`s (an error completion with `?`, a Close for a refused connect).

mod common;
#[path = "common/runtime.rs"]
mod runtime;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::finish;
use futures_util::future::BoxFuture;
use runtime::{connect, connect_raw, serve};
use serde_json::json;
use signalr_protocol::{CompletionResult, Payload};
use signalr_server::lifetime::{
    DefaultHubLifetimeManager, HubConnectionContext, HubLifetimeManager, SerializedHubMessage,
};
use signalr_server::{
    Hub, HubCallerContext, HubError, HubOptions,
    clients::Recipients,
    error::{ClientResultError, GroupError, SendError},
};

/// Wraps the in-memory manager, records what it is asked, and fails on demand.
struct Recording {
    local: Arc<DefaultHubLifetimeManager>,
    calls: Mutex<Vec<String>>,
    failing: AtomicBool,
    refuse_connect: AtomicBool,
}

impl Recording {
    fn record(&self, call: String) {
        self.calls.lock().expect("lock").push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
}

impl HubLifetimeManager for Recording {
    fn on_connected<'a>(
        &'a self,
        connection: &'a HubConnectionContext,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.record(format!("connected {:?}", connection.protocol()));
        if self.refuse_connect.load(Ordering::Acquire) {
            return Box::pin(async { Err(SendError::Backplane("no room".into())) });
        }
        self.local.on_connected(connection)
    }

    fn on_disconnected<'a>(&'a self, connection: &'a HubConnectionContext) -> BoxFuture<'a, ()> {
        self.record("disconnected".into());
        self.local.on_disconnected(connection)
    }

    fn send<'a>(
        &'a self,
        recipients: &'a Recipients,
        message: Arc<SerializedHubMessage>,
    ) -> BoxFuture<'a, Result<(), SendError>> {
        self.record(format!("send {recipients:?}"));
        if self.failing.load(Ordering::Acquire) {
            return Box::pin(async { Err(SendError::Backplane("Redis is away".into())) });
        }
        self.local.send(recipients, message)
    }

    fn add_to_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        self.record(format!("add {group}"));
        if self.failing.load(Ordering::Acquire) {
            return Box::pin(async move {
                Err(GroupError::AckTimeout {
                    connection_id: connection_id.to_owned(),
                    group: group.to_owned(),
                })
            });
        }
        HubLifetimeManager::add_to_group(&*self.local, connection_id, group)
    }

    fn remove_from_group<'a>(
        &'a self,
        connection_id: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        self.record(format!("remove {group}"));
        HubLifetimeManager::remove_from_group(&*self.local, connection_id, group)
    }

    fn invoke_connection<'a>(
        &'a self,
        connection_id: &'a str,
        target: String,
        arguments: Vec<Payload>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<CompletionResult, ClientResultError>> {
        self.record(format!("invoke {target}"));
        self.local
            .invoke_connection(connection_id, target, arguments, timeout)
    }
}

fn recording_hub(
    options: HubOptions,
) -> (
    Arc<Mutex<Option<Arc<Recording>>>>,
    signalr_server::HubBuilder,
) {
    let slot: Arc<Mutex<Option<Arc<Recording>>>> = Arc::default();
    let made = slot.clone();
    let builder = Hub::builder()
        .options(options)
        .method(
            "Broadcast",
            |hub: HubCallerContext, text: String| async move {
                hub.clients().others().send("Message", (text,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .method("Join", |hub: HubCallerContext, group: String| async move {
            hub.groups()
                .add_to_group(hub.connection_id(), &group)
                .await?;
            Ok::<_, HubError>(())
        })
        .method("Leave", |hub: HubCallerContext, group: String| async move {
            hub.groups()
                .remove_from_group(hub.connection_id(), &group)
                .await?;
            Ok::<_, HubError>(())
        })
        .lifetime_manager(move |local| {
            let recording = Arc::new(Recording {
                local,
                calls: Mutex::default(),
                failing: AtomicBool::new(false),
                refuse_connect: AtomicBool::new(false),
            });
            *made.lock().expect("lock") = Some(recording.clone());
            recording
        });
    (slot, builder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_sees_connects_sends_groups_and_disconnects() {
    let (slot, builder) = recording_hub(HubOptions::default());
    let server = serve(builder).await;
    let recording = slot
        .lock()
        .expect("lock")
        .clone()
        .expect("the manager was made by build()");
    let mut client = connect(&server).await;
    client
        .call("1", "Broadcast", json!(["hi"]))
        .await
        .assert_void();
    client
        .call("2", "Join", json!(["room"]))
        .await
        .assert_void();
    client
        .call("3", "Leave", json!(["room"]))
        .await
        .assert_void();
    let context = server.hub.context();
    let id = client.id.clone();
    let reached = context
        .clients()
        .client(id.clone())
        .send("Direct", ("x",))
        .await;
    assert_eq!(reached, Ok(()));
    drop(client);
    runtime::eventually("disconnect reported", || {
        recording.calls().last().map(String::as_str) == Some("disconnected")
    })
    .await;
    assert_eq!(
        recording.calls(),
        [
            "connected Some(Json)".to_owned(),
            format!("send AllExcept([\"{id}\"])"),
            "add room".to_owned(),
            "remove room".to_owned(),
            format!("send Connections([\"{id}\"])"),
            "disconnected".to_owned(),
        ]
    );
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_send_or_group_change_fails_the_invocation() {
    let options = HubOptions {
        enable_detailed_errors: true,
        ..Default::default()
    };
    let (slot, builder) = recording_hub(options);
    let server = serve(builder).await;
    let recording = slot.lock().expect("lock").clone().expect("manager");
    let mut client = connect(&server).await;
    recording.failing.store(true, Ordering::Release);
    let completion = client.call("1", "Broadcast", json!(["hi"])).await;
    assert_eq!(
        completion.0["error"],
        json!(
            "An unexpected error occurred invoking 'Broadcast' on the server. \
             The backplane failed to send the message: Redis is away"
        ),
        "{}",
        completion.0
    );
    let completion = client.call("2", "Join", json!(["room"])).await;
    assert_eq!(
        completion.0["error"],
        json!(format!(
            "An unexpected error occurred invoking 'Join' on the server. \
             No server acknowledged the change of group 'room' for connection '{}' in time.",
            client.id
        )),
        "{}",
        completion.0
    );
    // From outside a hub method the error is the caller's to handle.
    let failed = server
        .hub
        .context()
        .clients()
        .all()
        .send("Message", ("x",))
        .await;
    assert_eq!(failed, Err(SendError::Backplane("Redis is away".into())));
    recording.failing.store(false, Ordering::Release);
    client
        .call("3", "Broadcast", json!(["back"]))
        .await
        .assert_void();
    finish(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_manager_refuses_is_closed_with_an_error() {
    let (slot, builder) = recording_hub(HubOptions::default());
    let server = serve(builder).await;
    let recording = slot.lock().expect("lock").clone().expect("manager");
    recording.refuse_connect.store(true, Ordering::Release);
    let mut client = connect_raw(&server, "", "").await;
    let close = client.ws.next_json_skip_pings().await;
    assert_eq!(
        close,
        json!({"type": 7, "error": "Connection closed with an error."})
    );
    recording.refuse_connect.store(false, Ordering::Release);
    finish(&server).await;
}
