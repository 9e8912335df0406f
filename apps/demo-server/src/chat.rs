//! The chat hub (`/hubs/chat`, and `ChatHub` at `/signalr` for classic clients): rooms are SignalR
//! groups (`room:{room}`); a private message goes to every connection of one name.
//!
//! On one server, a private message goes to the connections this server knows under the name.
//! On a backplane, the members of other servers are unknown here, so every name is a group
//! too (`name:{name}`, joined with the room), and a private message is a send to that group: it
//! reaches the name on every server, and a name that nobody has is not reported.
//!
//! Client → server: `Join(name, room)` (also to switch rooms, and to rejoin after a reconnect),
//! `Leave()`, `SendToRoom(text)`, `SendPrivate(toName, text)`, `Whoami()`.
//! Server → client: `ReceiveMessage(message)`, `ReceivePrivate(message)`, `UserJoined(name, room)`,
//! `UserLeft(name, room)`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use signalr_redis::RedisBackplane;
use signalr_server::{Hub, HubCallerContext, HubError};

use crate::stats::{RoomRow, Stats, lock, now_ms};

/// Longest accepted name or room name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest accepted message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// Who a chat connection is and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name the user typed.
    pub name: String,
    /// The room (group) the connection is in.
    pub room: String,
}

/// The members of every room on this server, by connection id.
#[derive(Debug, Default)]
pub struct ChatState {
    members: Mutex<HashMap<String, Member>>,
    across_servers: bool,
}

/// The SignalR group of a room.
pub fn room_group(room: &str) -> String {
    format!("room:{room}")
}

/// The SignalR group of a name (on a backplane only).
pub fn name_group(name: &str) -> String {
    format!("name:{name}")
}

impl ChatState {
    /// No members yet; `across_servers` when the hub is on a backplane (names are groups then).
    pub fn new(across_servers: bool) -> Self {
        ChatState {
            members: Mutex::default(),
            across_servers,
        }
    }

    /// The member of a connection.
    pub fn member(&self, connection_id: &str) -> Option<Member> {
        lock(&self.members).get(connection_id).cloned()
    }

    /// Puts a connection in a room under a name; returns where it was before.
    pub fn join(&self, connection_id: &str, member: Member) -> Option<Member> {
        lock(&self.members).insert(connection_id.to_owned(), member)
    }

    /// Takes a connection out of its room; returns where it was.
    pub fn leave(&self, connection_id: &str) -> Option<Member> {
        lock(&self.members).remove(connection_id)
    }

    /// How many connections are in `room`.
    pub fn room_size(&self, room: &str) -> usize {
        lock(&self.members)
            .values()
            .filter(|m| m.room == room)
            .count()
    }

    /// The distinct names in `room`, sorted.
    pub fn names_in(&self, room: &str) -> Vec<String> {
        let names: BTreeSet<String> = lock(&self.members)
            .values()
            .filter(|m| m.room == room)
            .map(|m| m.name.clone())
            .collect();
        names.into_iter().collect()
    }

    /// The connections of every member called `name`.
    pub fn connections_named(&self, name: &str) -> Vec<String> {
        lock(&self.members)
            .iter()
            .filter(|(_, m)| m.name == name)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every room with members, by name.
    pub fn rooms(&self) -> Vec<RoomRow> {
        let mut rooms: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
        for member in lock(&self.members).values() {
            let entry = rooms.entry(member.room.clone()).or_default();
            entry.0 += 1;
            entry.1.insert(member.name.clone());
        }
        rooms
            .into_iter()
            .map(|(room, (members, names))| RoomRow {
                room,
                members,
                names: names.into_iter().collect(),
            })
            .collect()
    }
}

/// A room message or a private message, as clients receive it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// The sender's name.
    pub from: String,
    /// The room it was sent to (room messages) or the sender's room (private messages).
    pub room: String,
    /// The recipient's name, for private messages.
    pub to: Option<String>,
    /// The text.
    pub text: String,
    /// When the server received it, in ms since the Unix epoch.
    pub at: u64,
}

/// What `Join` answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    /// The room joined.
    pub room: String,
    /// The names in the room, the caller's included.
    pub members: Vec<String>,
}

/// Checks a user or room name: 1 to [`MAX_NAME_CHARS`] characters after trimming, no control
/// characters.
pub fn valid_name(what: &str, value: &str) -> Result<String, HubError> {
    let value = value.trim();
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || value.chars().any(char::is_control) {
        return Err(HubError::new(format!(
            "A {what} has 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    Ok(value.to_owned())
}

fn valid_text(text: &str) -> Result<String, HubError> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_TEXT_CHARS {
        return Err(HubError::new(format!(
            "A message has 1 to {MAX_TEXT_CHARS} characters."
        )));
    }
    Ok(text.to_owned())
}

/// Takes the caller out of its room, telling the room's others.
async fn leave_room(
    hub: &HubCallerContext,
    chat: &ChatState,
    stats: &Stats,
    member: &Member,
) -> Result<(), HubError> {
    hub.groups()
        .remove_from_group(hub.connection_id(), &room_group(&member.room))
        .await?;
    hub.clients()
        .group(room_group(&member.room))
        .send("UserLeft", (member.name.clone(), member.room.clone()))
        .await?;
    stats.sent("chat", chat.room_size(&member.room));
    Ok(())
}

/// The chat hub, on `backplane` when given.
pub fn chat_hub(
    chat: Arc<ChatState>,
    stats: Arc<Stats>,
    backplane: Option<&RedisBackplane>,
) -> Hub {
    let on_disconnected = {
        let (chat, stats) = (chat.clone(), stats.clone());
        move |hub: HubCallerContext, _error: Option<String>| {
            let (chat, stats) = (chat.clone(), stats.clone());
            async move {
                // Group memberships are already gone: the room's group is the others.
                if let Some(member) = chat.leave(hub.connection_id()) {
                    hub.clients()
                        .group(room_group(&member.room))
                        .send("UserLeft", (member.name, member.room.clone()))
                        .await?;
                    stats.sent("chat", chat.room_size(&member.room));
                }
                Ok::<_, HubError>(())
            }
        }
    };
    crate::demo_hub("chat", "ChatHub", &stats, backplane)
        .state(chat)
        .state(stats)
        .on_disconnected(on_disconnected)
        .method("Join", join)
        .method("Leave", leave)
        .method("SendToRoom", send_to_room)
        .method("SendPrivate", send_private)
        .build()
}

type Shared = (Arc<ChatState>, Arc<Stats>);

fn shared(hub: &HubCallerContext) -> Result<Shared, HubError> {
    match (hub.state::<Arc<ChatState>>(), hub.state::<Arc<Stats>>()) {
        (Some(chat), Some(stats)) => Ok((chat, stats)),
        _ => Err(HubError::new("The chat hub has no state.")),
    }
}

async fn join(hub: HubCallerContext, name: String, room: String) -> Result<Joined, HubError> {
    let (chat, stats) = shared(&hub)?;
    let member = Member {
        name: valid_name("name", &name)?,
        room: valid_name("room name", &room)?,
    };
    let id = hub.connection_id().to_owned();
    let previous = chat.join(&id, member.clone());
    if let Some(previous) = &previous
        && previous.room != member.room
    {
        leave_room(&hub, &chat, &stats, previous).await?;
    }
    if chat.across_servers {
        let old_name = previous.as_ref().map(|p| p.name.as_str());
        if old_name != Some(member.name.as_str()) {
            if let Some(old_name) = old_name {
                hub.groups()
                    .remove_from_group(&id, &name_group(old_name))
                    .await?;
            }
            hub.groups()
                .add_to_group(&id, &name_group(&member.name))
                .await?;
        }
    }
    hub.groups()
        .add_to_group(&id, &room_group(&member.room))
        .await?;
    hub.clients()
        .others_in_group(room_group(&member.room))
        .send("UserJoined", (member.name.clone(), member.room.clone()))
        .await?;
    stats.sent("chat", chat.room_size(&member.room).saturating_sub(1));
    tracing::debug!(connection_id = %id, name = %member.name, room = %member.room, "joined");
    Ok(Joined {
        members: chat.names_in(&member.room),
        room: member.room,
    })
}

async fn leave(hub: HubCallerContext) -> Result<(), HubError> {
    let (chat, stats) = shared(&hub)?;
    if let Some(member) = chat.leave(hub.connection_id()) {
        leave_room(&hub, &chat, &stats, &member).await?;
        if chat.across_servers {
            hub.groups()
                .remove_from_group(hub.connection_id(), &name_group(&member.name))
                .await?;
        }
    }
    Ok(())
}

async fn send_to_room(hub: HubCallerContext, text: String) -> Result<(), HubError> {
    let (chat, stats) = shared(&hub)?;
    let member = chat
        .member(hub.connection_id())
        .ok_or_else(|| HubError::new("Join a room first."))?;
    let message = ChatMessage {
        from: member.name,
        room: member.room.clone(),
        to: None,
        text: valid_text(&text)?,
        at: now_ms(),
    };
    hub.clients()
        .group(room_group(&member.room))
        .send("ReceiveMessage", (message,))
        .await?;
    stats.sent("chat", chat.room_size(&member.room));
    Ok(())
}

/// Sends to every connection called `to`; answers how many connections of this server have
/// the name (on a backplane, those of other servers get it too, uncounted).
async fn send_private(hub: HubCallerContext, to: String, text: String) -> Result<usize, HubError> {
    let (chat, stats) = shared(&hub)?;
    let member = chat
        .member(hub.connection_id())
        .ok_or_else(|| HubError::new("Join a room first."))?;
    let to = valid_name("name", &to)?;
    let recipients = chat.connections_named(&to);
    if recipients.is_empty() && !chat.across_servers {
        return Err(HubError::new(format!("Nobody called '{to}' is online.")));
    }
    let message = ChatMessage {
        from: member.name,
        room: member.room,
        to: Some(to.clone()),
        text: valid_text(&text)?,
        at: now_ms(),
    };
    let clients = hub.clients();
    let targets = if chat.across_servers {
        clients.group(name_group(&to))
    } else {
        clients.clients(recipients.clone())
    };
    targets.send("ReceivePrivate", (message,)).await?;
    stats.sent("chat", recipients.len());
    Ok(recipients.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, room: &str) -> Member {
        Member {
            name: name.to_owned(),
            room: room.to_owned(),
        }
    }

    #[test]
    fn rooms_and_names() {
        let chat = ChatState::default();
        assert_eq!(chat.join("c1", member("ann", "lobby")), None);
        chat.join("c2", member("bob", "lobby"));
        chat.join("c3", member("ann", "rust"));
        assert_eq!(chat.room_size("lobby"), 2);
        assert_eq!(chat.names_in("lobby"), ["ann", "bob"]);
        let mut anns = chat.connections_named("ann");
        anns.sort();
        assert_eq!(anns, ["c1", "c3"]);
        assert_eq!(
            chat.join("c2", member("bob", "rust")),
            Some(member("bob", "lobby"))
        );
        let rooms = chat.rooms();
        assert_eq!(rooms.len(), 2);
        assert_eq!((rooms[1].room.as_str(), rooms[1].members), ("rust", 2));
        assert_eq!(chat.leave("c1"), Some(member("ann", "lobby")));
        assert_eq!(chat.rooms().len(), 1);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(valid_name("name", "  ann ").ok().as_deref(), Some("ann"));
        assert!(valid_name("name", "   ").is_err());
        assert!(valid_name("name", &"x".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(valid_name("name", "a\nb").is_err());
        assert!(valid_text("").is_err());
        assert!(valid_text(&"y".repeat(MAX_TEXT_CHARS)).is_ok());
    }
}
