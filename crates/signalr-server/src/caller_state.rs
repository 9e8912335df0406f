//! Caller state: the per-call key/value bag of classic SignalR (`Clients.Caller.name` on the
//! server, `proxy.state.name` in the JavaScript client).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The caller's state (classic SignalR `Clients.Caller.<name>`): values a classic client sends
/// with each call (`proxy.state`), which the hub method may read and change. Changed values go
/// back to the client with the call's result, which merges them into its `proxy.state`.
///
/// Cheap to clone; clones share one state. Only [`HubCallerContext::caller_state`] makes
/// one that works:
/// - for a **classic** client's hub method call it holds the state the call carried;
/// - for **ASP.NET Core** clients, which have no such state, and in `on_connected`,
///   `on_disconnected` and `on_reconnected`, it is inert: reads find nothing and writes are
///   dropped ([`CallerState::is_inert`]).
///
/// Keys are case-sensitive, as in classic SignalR. What counts as a change is what classic
/// SignalR sends back: a key whose value at the end of the call differs from the one the call
/// brought (setting a key to the value it had is no change; removing a key sets it to `null`).
///
/// ```
/// use signalr_server::{Hub, HubCallerContext, context::CallerState};
///
/// let hub = Hub::builder()
///     // JS: proxy.state.name = "ann"; proxy.invoke("Greet")
///     .method("Greet", |ctx: HubCallerContext| async move {
///         let state = ctx.caller_state();
///         let name: String = state.get("name").unwrap_or_default();
///         let count: u32 = state.get("count").unwrap_or(0);
///         state.set("count", count + 1); // the client's proxy.state.count afterwards
///         format!("hello {name}")
///     })
///     // The same, taking the state as a parameter (not a client argument).
///     .method("Forget", |_: HubCallerContext, state: CallerState| async move {
///         state.remove("name");
///     })
///     .build();
/// # drop(hub);
/// ```
///
/// [`HubCallerContext::caller_state`]: crate::HubCallerContext::caller_state
#[derive(Clone, Default)]
pub struct CallerState {
    /// `None`: inert.
    tracked: Option<Arc<Mutex<Tracked>>>,
}

struct Tracked {
    values: Map<String, Value>,
    /// The values the call brought, for the keys written since, in the order first written.
    before: Vec<(String, Option<Value>)>,
}

impl Tracked {
    fn write(&mut self, key: &str, value: Option<Value>) {
        if !self.before.iter().any(|(k, _)| k == key) {
            self.before
                .push((key.to_owned(), self.values.get(key).cloned()));
        }
        match value {
            Some(value) => {
                self.values.insert(key.to_owned(), value);
            }
            None => {
                self.values.remove(key);
            }
        }
    }
}

impl std::fmt::Debug for CallerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.lock() {
            Some(tracked) => f.debug_tuple("CallerState").field(&tracked.values).finish(),
            None => f.write_str("CallerState(inert)"),
        }
    }
}

impl CallerState {
    /// A state holding what a classic call brought.
    pub(crate) fn new(initial: Map<String, Value>) -> Self {
        CallerState {
            tracked: Some(Arc::new(Mutex::new(Tracked {
                values: initial,
                before: Vec::new(),
            }))),
        }
    }

    /// The state of callers that have none (ASP.NET Core clients, connection hooks).
    pub(crate) fn inert() -> Self {
        CallerState { tracked: None }
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Tracked>> {
        self.tracked.as_ref()?.lock().ok()
    }

    /// Whether this state is inert (the caller is not a classic client's hub method call): reads
    /// find nothing, writes are dropped.
    pub fn is_inert(&self) -> bool {
        self.tracked.is_none()
    }

    /// The value of `key` bound to `T` with serde; `None` when absent, when it does not bind
    /// to `T`, or when the state is inert.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let value = self.get_value(key)?;
        serde_json::from_value(value)
            .inspect_err(|err| tracing::debug!(%key, %err, "caller state value does not bind"))
            .ok()
    }

    /// The value of `key` as JSON; `None` when absent or inert.
    pub fn get_value(&self, key: &str) -> Option<Value> {
        self.lock()?.values.get(key).cloned()
    }

    /// Sets `key` to `value` (serialized with serde now; a value that fails to serialize is
    /// logged and not set). Dropped when the state is inert.
    pub fn set(&self, key: &str, value: impl Serialize) {
        let Some(mut tracked) = self.lock() else {
            return;
        };
        match serde_json::to_value(value) {
            Ok(value) => tracked.write(key, Some(value)),
            Err(err) => tracing::error!(%key, %err, "caller state value failed to serialize"),
        }
    }

    /// Removes `key` (the client then reads `null` for it); returns the value it had. Nothing
    /// happens when the state is inert.
    pub fn remove(&self, key: &str) -> Option<Value> {
        let mut tracked = self.lock()?;
        let previous = tracked.values.get(key).cloned();
        tracked.write(key, None);
        previous
    }

    /// What the call changed, for the result sent to a classic client: the keys whose value
    /// differs from the one the call brought, in the order they were first written, removed keys
    /// as `null`. `None` when nothing changed (or inert).
    pub(crate) fn changes(&self) -> Option<Map<String, Value>> {
        let tracked = self.lock()?;
        let changes: Map<String, Value> = tracked
            .before
            .iter()
            .filter_map(|(key, before)| {
                let now = tracked.values.get(key);
                (now != before.as_ref()).then(|| (key.clone(), now.cloned().unwrap_or(Value::Null)))
            })
            .collect();
        (!changes.is_empty()).then_some(changes)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(initial: Value) -> CallerState {
        match initial {
            Value::Object(map) => CallerState::new(map),
            _ => panic!("an object"),
        }
    }

    fn changes(state: &CallerState) -> Option<String> {
        state.changes().map(|c| Value::Object(c).to_string())
    }

    #[test]
    fn reads_what_the_call_brought() {
        let s = state(json!({ "name": "ann", "count": 1 }));
        assert_eq!(s.get::<String>("name").as_deref(), Some("ann"));
        assert_eq!(s.get::<u32>("count"), Some(1));
        assert_eq!(s.get::<u32>("name"), None, "does not bind");
        assert_eq!(s.get::<String>("NAME"), None, "keys are case-sensitive");
        assert_eq!(s.get_value("count"), Some(json!(1)));
        assert!(!s.is_inert());
        assert_eq!(changes(&s), None);
    }

    #[test]
    fn changes_in_the_order_first_written() {
        let s = state(json!({ "name": "ann", "count": 1, "keep": true }));
        s.set("greeted", "hello ann");
        s.set("count", 2);
        s.set("greeted", "hello again");
        assert_eq!(
            changes(&s).as_deref(),
            Some(r#"{"greeted":"hello again","count":2}"#)
        );
    }

    #[test]
    fn writing_the_value_a_key_had_is_no_change() {
        let s = state(json!({ "greeted": "hello bob", "count": 1 }));
        s.set("greeted", "hello bob");
        s.set("count", 5);
        s.set("count", 1);
        assert_eq!(changes(&s), None);
        s.set("count", 2);
        assert_eq!(changes(&s).as_deref(), Some(r#"{"count":2}"#));
    }

    #[test]
    fn removed_keys_become_null() {
        let s = state(json!({ "name": "ann" }));
        assert_eq!(s.remove("name"), Some(json!("ann")));
        assert_eq!(s.get_value("name"), None);
        assert_eq!(s.remove("absent"), None);
        assert_eq!(changes(&s).as_deref(), Some(r#"{"name":null}"#));
    }

    #[test]
    fn clones_share_the_state() {
        let s = state(json!({}));
        let clone = s.clone();
        clone.set("x", 1);
        assert_eq!(s.get::<i32>("x"), Some(1));
        assert_eq!(changes(&s).as_deref(), Some(r#"{"x":1}"#));
    }

    #[test]
    fn inert_state_reads_nothing_and_drops_writes() {
        let s = CallerState::inert();
        assert!(s.is_inert());
        s.set("x", 1);
        assert_eq!(s.get_value("x"), None);
        assert_eq!(s.remove("x"), None);
        assert_eq!(s.changes(), None);
        assert!(CallerState::default().is_inert());
    }
}
