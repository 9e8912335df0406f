//! The classic TestHub contract: the hubs that the official classic .NET client
//! (`Microsoft.AspNet.SignalR.Client` 2.4) and jQuery 2.4.3 conformance checks call at `/signalr`:
//! `TestHub`, `renamed`, and `SecretHub`, which requires an authenticated user (nobody is
//! authenticated here).
//!
//! A connection's user id is its `user` query parameter. Detailed errors are off, as on a
//! default SignalR 2.4 server: `ThrowException`'s text must not reach the client, while
//! `ThrowHubException`'s message and error data `{Code: 42}` always do.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::test_hub::header;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use signalr_server::{
    Hub, HubCallerContext, HubError,
    auth::AuthorizationPolicy,
    filter::{HubFilter, HubInvocation, Next},
    hub::{InvokeError, MethodOutput, Progress},
};

/// `{Name, Value}`, echoed by `EchoObject`. A missing property keeps its default, as in the .NET
/// class (`Name` null, `Value` 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomObject {
    name: Option<String>,
    #[serde(default)]
    value: i32,
}

/// `{Symbol, Price}`: a complex type with a decimal price (0 when missing, as in .NET).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stock {
    symbol: Option<String>,
    #[serde(default)]
    price: f64,
}

/// An error reported like a .NET `InvalidOperationException` (its text is a detail: only
/// detailed errors show it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidOperation(pub String);

/// Lifetime events per connection id (`GetLifetimeEvents`) and the ids that disconnected
/// (`WasDisconnected`); process-wide like the .NET hub's statics.
static EVENTS: LazyLock<Mutex<HashMap<String, Vec<&'static str>>>> =
    LazyLock::new(Default::default);
static GONE: LazyLock<Mutex<HashMap<String, bool>>> = LazyLock::new(Default::default);
/// Invocations counted per connection by the pipeline module (`GetPipelineCount`).
static COUNTS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

fn record(connection_id: &str, event: &'static str) {
    if let Ok(mut events) = EVENTS.lock() {
        events
            .entry(connection_id.to_owned())
            .or_default()
            .push(event);
    }
}

/// A hub pipeline module (classic `HubPipelineModule.OnBeforeIncoming`): counts the invocations
/// each connection makes.
struct CountingModule;

impl HubFilter for CountingModule {
    fn invoke(
        self: Arc<Self>,
        invocation: HubInvocation,
        next: Next,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
        if let Ok(mut counts) = COUNTS.lock() {
            *counts
                .entry(invocation.caller.connection_id().to_owned())
                .or_default() += 1;
        }
        next.run(invocation)
    }
}

/// A query parameter of the request that made the connection.
fn query(caller: &HubCallerContext, name: &str) -> Option<String> {
    caller.request()?.query_param(name)
}

/// The classic `TestHub`.
pub fn test_hub() -> Hub {
    Hub::builder()
        .name("TestHub")
        .filter(CountingModule)
        .user_id_from_request(|_, request| request.query_param("user"))
        .on_connected(|caller: HubCallerContext| async move {
            record(caller.connection_id(), "OnConnected");
        })
        .on_reconnected(|caller: HubCallerContext| async move {
            record(caller.connection_id(), "OnReconnected");
        })
        .on_disconnected(
            |caller: HubCallerContext, _error: Option<String>| async move {
                if let Ok(mut gone) = GONE.lock() {
                    gone.insert(caller.connection_id().to_owned(), caller.stop_called());
                }
            },
        )
        .method(
            "Echo",
            |_: HubCallerContext, s: Option<String>| async move { s },
        )
        .parameter_names("Echo", 1, &["s"])
        .method(
            "Add",
            |_: HubCallerContext, a: i32, b: i32| async move { a + b },
        )
        .parameter_names("Add", 2, &["a", "b"])
        .method(
            "EchoObject",
            |_: HubCallerContext, o: CustomObject| async move { o },
        )
        .parameter_names("EchoObject", 1, &["o"])
        .method("GetConnectionId", |caller: HubCallerContext| async move {
            caller.connection_id().to_owned()
        })
        .method("GetTransportName", |caller: HubCallerContext| async move {
            query(&caller, "transport")
        })
        .method(
            "GetHeader",
            |caller: HubCallerContext, name: String| async move { header(&caller, &name) },
        )
        .parameter_names("GetHeader", 1, &["name"])
        .method(
            "GetQueryString",
            |caller: HubCallerContext, name: String| async move { query(&caller, &name) },
        )
        .parameter_names("GetQueryString", 1, &["name"])
        .method(
            "ThrowHubException",
            |_: HubCallerContext, msg: String| async move {
                Err::<(), _>(HubError::with_data(msg, serde_json::json!({ "Code": 42 })))
            },
        )
        .parameter_names("ThrowHubException", 1, &["msg"])
        .method(
            "ThrowException",
            |_: HubCallerContext, msg: String| async move {
                Err::<(), _>(HubError::from(InvalidOperation(msg)))
            },
        )
        .parameter_names("ThrowException", 1, &["msg"])
        .method(
            "InvokeWithString",
            |caller: HubCallerContext, msg: String| async move {
                caller.clients().caller().send("message", (msg,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("InvokeWithString", 1, &["msg"])
        .method(
            "SendToAll",
            |caller: HubCallerContext, msg: String| async move {
                caller.clients().all().send("broadcast", (msg,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToAll", 1, &["msg"])
        .method(
            "SendToClient",
            |caller: HubCallerContext, id: String, msg: String| async move {
                caller.clients().client(id).send("message", (msg,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToClient", 2, &["id", "msg"])
        .method(
            "SendToClients",
            |caller: HubCallerContext, ids: Vec<String>, msg: String| async move {
                caller
                    .clients()
                    .clients(ids)
                    .send("message", (msg,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToClients", 2, &["ids", "msg"])
        .method(
            "SendToOthers",
            |caller: HubCallerContext, msg: String| async move {
                caller.clients().others().send("message", (msg,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToOthers", 1, &["msg"])
        .method(
            "SendAllExcept",
            |caller: HubCallerContext, id: String, msg: String| async move {
                caller
                    .clients()
                    .all_except([id])
                    .send("message", (msg,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendAllExcept", 2, &["id", "msg"])
        .method(
            "SendToOthersInGroup",
            |caller: HubCallerContext, g: String, m: String| async move {
                caller
                    .clients()
                    .others_in_group(g.clone())
                    .send("groupMessage", (g, m))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToOthersInGroup", 2, &["g", "m"])
        .method(
            "SendToGroups",
            |caller: HubCallerContext, gs: Vec<String>, m: String| async move {
                let joined = gs.join(",");
                caller
                    .clients()
                    .groups(gs)
                    .send("groupMessage", (joined, m))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToGroups", 2, &["gs", "m"])
        .method(
            "SendToGroupExcept",
            |caller: HubCallerContext, g: String, excluded: Vec<String>, m: String| async move {
                caller
                    .clients()
                    .group_except(g.clone(), excluded)
                    .send("groupMessage", (g, m))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToGroupExcept", 3, &["g", "excluded", "m"])
        .method(
            "SendToUser",
            |caller: HubCallerContext, user: String, m: String| async move {
                caller.clients().user(user).send("message", (m,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToUser", 2, &["user", "m"])
        .method(
            "SendToUsers",
            |caller: HubCallerContext, users: Vec<String>, m: String| async move {
                caller.clients().users(users).send("message", (m,)).await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToUsers", 2, &["users", "m"])
        .method("GetUserId", |caller: HubCallerContext| async move {
            query(&caller, "user")
        })
        .method("NotifyNoArgs", |caller: HubCallerContext| async move {
            caller.clients().caller().send("notify", ()).await?;
            Ok::<_, HubError>(())
        })
        .method("SendManyArgs", |caller: HubCallerContext| async move {
            let stock = Stock {
                symbol: Some("MSFT".into()),
                price: 12.34,
            };
            caller
                .clients()
                .caller()
                .send("manyArgs", (1, "two", 3.5, true, [4, 5], stock, "seven"))
                .await?;
            Ok::<_, HubError>(())
        })
        .method(
            "UpdateStockPrice",
            |caller: HubCallerContext, s: Stock| async move {
                let next = Stock {
                    symbol: s.symbol,
                    price: s.price + 1.0,
                };
                // The server names this client method in PascalCase; clients match it ignoring case.
                caller
                    .clients()
                    .caller()
                    .send("UpdateStockPrice", (next.clone(),))
                    .await?;
                Ok::<_, HubError>(next)
            },
        )
        .parameter_names("UpdateStockPrice", 1, &["s"])
        .method(
            "aliasedEcho",
            |_: HubCallerContext, s: String| async move { s },
        )
        .parameter_names("aliasedEcho", 1, &["s"])
        .method(
            "GetCookie",
            |caller: HubCallerContext, name: String| async move {
                caller
                    .request()
                    .and_then(|r| r.cookie(&name).map(str::to_owned))
            },
        )
        .parameter_names("GetCookie", 1, &["name"])
        .method("GetPipelineCount", |caller: HubCallerContext| async move {
            COUNTS
                .lock()
                .ok()
                .and_then(|c| c.get(caller.connection_id()).copied())
                .unwrap_or(0)
        })
        .method(
            "CountWithProgress",
            |_: HubCallerContext, n: i32, progress: Progress<i32>| async move {
                for i in 1..=n {
                    progress.report(i);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                "done"
            },
        )
        .parameter_names("CountWithProgress", 1, &["n"])
        .method("GetStateName", |caller: HubCallerContext| async move {
            let state = caller.caller_state();
            let name: Option<String> = state.get("name");
            state.set(
                "greeted",
                format!("hello {}", name.clone().unwrap_or_default()),
            );
            let count: i64 = state.get("count").unwrap_or(0);
            state.set("count", count + 1);
            name
        })
        .method(
            "JoinGroup",
            |caller: HubCallerContext, g: String| async move {
                caller
                    .groups()
                    .add_to_group(caller.connection_id(), &g)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("JoinGroup", 1, &["g"])
        .method(
            "LeaveGroup",
            |caller: HubCallerContext, g: String| async move {
                caller
                    .groups()
                    .remove_from_group(caller.connection_id(), &g)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("LeaveGroup", 1, &["g"])
        .method(
            "SendToGroup",
            |caller: HubCallerContext, g: String, m: String| async move {
                caller
                    .clients()
                    .group(g.clone())
                    .send("groupMessage", (g, m))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .parameter_names("SendToGroup", 2, &["g", "m"])
        .method("Overload", |_: HubCallerContext| async move { 0 })
        .method("Overload", |_: HubCallerContext, _a: i32| async move { 1 })
        .method(
            "Overload",
            |_: HubCallerContext, _a: i32, _b: i32| async move { 2 },
        )
        .parameter_names("Overload", 1, &["a"])
        .parameter_names("Overload", 2, &["a", "b"])
        .method("GetLifetimeEvents", |caller: HubCallerContext| async move {
            EVENTS
                .lock()
                .ok()
                .and_then(|e| e.get(caller.connection_id()).cloned())
                .unwrap_or_default()
        })
        .method(
            "WasDisconnected",
            |_: HubCallerContext, id: String| async move {
                GONE.lock().map(|g| g.contains_key(&id)).unwrap_or(false)
            },
        )
        .parameter_names("WasDisconnected", 1, &["id"])
        .build()
}

/// The hub registered as `renamed` (a `[HubName("renamed")]` hub).
pub fn renamed_hub() -> Hub {
    Hub::builder()
        .name("renamed")
        .method(
            "Echo",
            |_: HubCallerContext, s: Option<String>| async move { s },
        )
        .parameter_names("Echo", 1, &["s"])
        .build()
}

/// `SecretHub`: `[Authorize]`, and nobody is authenticated here.
pub fn secret_hub() -> Hub {
    Hub::builder()
        .name("SecretHub")
        .require_authorization(AuthorizationPolicy::authenticated())
        .method(
            "Echo",
            |_: HubCallerContext, s: Option<String>| async move { s },
        )
        .parameter_names("Echo", 1, &["s"])
        .build()
}
