//! A Redis scale-out backplane for the SignalR server, wire-compatible with ASP.NET Core's
//! StackExchange.Redis backplane: a Rust server and ASP.NET Core servers sharing one Redis deliver
//! each other's hub messages.
//!
//! The servers talk through Redis pub/sub only (`SUBSCRIBE`, `UNSUBSCRIBE`, `PUBLISH` on literal
//! channel names; nothing is stored). [`protocol`] is the sans-IO part: the channel names and the
//! MessagePack envelopes published on them.

pub mod protocol;
