//! The classic ASP.NET SignalR 2.x front door (jQuery `signalr` 2.x and
//! `Microsoft.AspNet.SignalR.Client` 2.x clients) on the hub runtime: the pieces that need no
//! I/O. The wire format itself is `signalr_protocol::classic`.
//!
//! * [`token`]: the tamper-proof connection and groups tokens;
//! * [`proxy`]: the generated JavaScript proxies served at `/signalr/hubs`.

pub(crate) mod proxy;
pub(crate) mod token;
