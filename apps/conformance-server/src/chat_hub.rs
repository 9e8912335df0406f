//! `ChatHub`: the hub for scale-out checks, served at `/chat` under the backplane name
//! `Peer.ChatHub` (the .NET type name of the same hub in the ASP.NET Core peer), so that with
//! `--redis` its clients and those of an ASP.NET Core server on the same Redis reach each other.
//!
//! | method | what it does |
//! |---|---|
//! | `GetConnectionId()` | the caller's connection id |
//! | `GetUserIdentifier()` | the caller's user id: the JWT name identifier, else the `user` query parameter |
//! | `SendMessage(user, msg)` | `ReceiveMessage(user, msg)` to all |
//! | `SendToOthers(user, msg)` | `ReceiveMessage(user, msg)` to all but the caller |
//! | `SendAllExcept(id, msg)` | `ReceiveMessage("all-except", msg)` to all but connection `id` |
//! | `JoinGroup(g)`, `LeaveGroup(g)` | the caller joins or leaves group `g` |
//! | `AddToGroup(id, g)` | connection `id`, on any server, joins `g` |
//! | `SendToGroup(g, msg)` | `GroupMessage(g, msg)` to the members of `g` |
//! | `SendToGroupExcept(g, id, msg)` | the same, but not to connection `id` |
//! | `SendToUser(user, msg)` | `UserMessage(msg)` to every connection of `user` |
//! | `SendToConnection(id, msg)` | `DirectMessage(msg)` to connection `id` |
//! | `AskClient(id, question)` | the client result of `GetAnswer(question)` on connection `id` (any server), 10 s timeout |
//!
//! At most 4 invocations of one client run at once.

use std::time::Duration;

use signalr_server::{Hub, HubCallerContext, HubError, HubOptions};

/// The backplane name, equal to the .NET hub's full type name.
pub const BACKPLANE_NAME: &str = "Peer.ChatHub";

/// How long `AskClient` waits for the other client's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// The chat hub, on `backplane` when given.
pub fn chat_hub(backplane: Option<&signalr_redis::RedisBackplane>) -> Hub {
    let options = HubOptions {
        enable_detailed_errors: true,
        maximum_parallel_invocations_per_client: 4,
        client_result_timeout: ASK_TIMEOUT,
        ..Default::default()
    };
    let mut builder = Hub::builder()
        .options(options)
        .user_id_from_request(|user, request| {
            user.name_identifier()
                .or_else(|| request.query_param("user").filter(|u| !u.is_empty()))
        })
        .method("GetConnectionId", |hub: HubCallerContext| async move {
            hub.connection_id().to_owned()
        })
        .method("GetUserIdentifier", |hub: HubCallerContext| async move {
            hub.user_identifier().map(str::to_owned)
        })
        .method(
            "SendMessage",
            |hub: HubCallerContext, user: String, message: String| async move {
                hub.clients()
                    .all()
                    .send("ReceiveMessage", (user, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToOthers",
            |hub: HubCallerContext, user: String, message: String| async move {
                hub.clients()
                    .others()
                    .send("ReceiveMessage", (user, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendAllExcept",
            |hub: HubCallerContext, excluded: String, message: String| async move {
                hub.clients()
                    .all_except([excluded])
                    .send("ReceiveMessage", ("all-except", message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "JoinGroup",
            |hub: HubCallerContext, group: String| async move {
                hub.groups()
                    .add_to_group(hub.connection_id(), &group)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "LeaveGroup",
            |hub: HubCallerContext, group: String| async move {
                hub.groups()
                    .remove_from_group(hub.connection_id(), &group)
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "AddToGroup",
            |hub: HubCallerContext, connection_id: String, group: String| async move {
                hub.groups().add_to_group(&connection_id, &group).await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroup",
            |hub: HubCallerContext, group: String, message: String| async move {
                hub.clients()
                    .group(group.clone())
                    .send("GroupMessage", (group, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToGroupExcept",
            |hub: HubCallerContext, group: String, excluded: String, message: String| async move {
                hub.clients()
                    .group_except(group.clone(), [excluded])
                    .send("GroupMessage", (group, message))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToUser",
            |hub: HubCallerContext, user: String, message: String| async move {
                hub.clients()
                    .user(user)
                    .send("UserMessage", (message,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "SendToConnection",
            |hub: HubCallerContext, connection_id: String, message: String| async move {
                hub.clients()
                    .client(connection_id)
                    .send("DirectMessage", (message,))
                    .await?;
                Ok::<_, HubError>(())
            },
        )
        .method(
            "AskClient",
            |hub: HubCallerContext, connection_id: String, question: String| async move {
                let answer: String = hub
                    .clients()
                    .client(connection_id)
                    .invoke("GetAnswer", (question,))
                    .await?;
                Ok::<_, HubError>(answer)
            },
        );
    if let Some(backplane) = backplane {
        builder = builder.lifetime_manager(backplane.hub(BACKPLANE_NAME));
    }
    builder.build()
}
