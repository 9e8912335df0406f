//! Client methods the server calls: `HubConnection::on` handlers, how their arguments are bound
//! and how their return values answer client-result invocations (docs/protocol.md, "Client results").

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, Weak};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::de::{self, DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserializer, Serialize};
use signalr_protocol::{CompletionResult, Payload};

/// The answer of one handler call.
#[derive(Debug)]
pub enum HandlerOutcome {
    /// The handler returned no result (`()`, `None`).
    NoResult,
    /// The handler returned a value.
    Result(Payload),
    /// The handler failed with this text.
    Error(String),
}

/// What a handler may return: `()` (no result), `Option<T>` (`Some` answers a client-result
/// invocation with the value, `None` answers nothing) or `Result<T, E>` (`Ok` answers with the
/// value, `Err` with the error's text), where `T: Serialize` and `E: Display`.
///
/// You don't implement this: it is implemented for those types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned by a SignalR client handler",
    note = "return `()`, `Some(value)`/`None`, or `Ok(value)`/`Err(error)`; async handlers return a future of one of these"
)]
pub trait HandlerOutput: Send + 'static {
    /// Converts the return value.
    fn into_outcome(self) -> HandlerOutcome;
}

impl HandlerOutput for () {
    fn into_outcome(self) -> HandlerOutcome {
        HandlerOutcome::NoResult
    }
}

impl<T: Serialize + Send + Sync + 'static> HandlerOutput for Option<T> {
    fn into_outcome(self) -> HandlerOutcome {
        match self {
            Some(value) => HandlerOutcome::Result(Payload::from_value(value)),
            None => HandlerOutcome::NoResult,
        }
    }
}

impl<T: Serialize + Send + Sync + 'static, E: Display + Send + 'static> HandlerOutput
    for Result<T, E>
{
    fn into_outcome(self) -> HandlerOutcome {
        match self {
            Ok(value) => HandlerOutcome::Result(Payload::from_value(value)),
            Err(err) => HandlerOutcome::Error(err.to_string()),
        }
    }
}

/// Marker types that tell the [`Handler`] implementations apart; never named by users.
#[doc(hidden)]
pub mod markers {
    /// A synchronous handler with serde-bound arguments.
    #[derive(Debug)]
    pub struct Typed<T, R>(std::marker::PhantomData<fn(T) -> R>);
    /// An async handler with serde-bound arguments.
    #[derive(Debug)]
    pub struct TypedAsync<T, F>(std::marker::PhantomData<fn(T) -> F>);
    /// A synchronous handler of the raw arguments.
    #[derive(Debug)]
    pub struct Raw<R>(std::marker::PhantomData<fn() -> R>);
    /// An async handler of the raw arguments.
    #[derive(Debug)]
    pub struct RawAsync<F>(std::marker::PhantomData<fn() -> F>);
}

/// A client method handler for [`HubConnection::on`](crate::HubConnection::on).
///
/// Implemented for closures of one parameter, sync or async:
/// - `Fn(T) -> R` and `Fn(T) -> impl Future<Output = R>` where `T: DeserializeOwned` is bound from
///   the invocation's argument list as a sequence: a tuple `(String, String)` takes the first two
///   arguments (one argument is `(String,)`), `Vec<T>` takes all of the same type,
///   `serde_json::Value` takes them all as a JSON array, and a struct deriving `Deserialize`
///   takes them positionally. Extra arguments are ignored; `()` takes none.
/// - `Fn(Vec<Payload>) -> R` (and async): the raw arguments, to bind one by one with
///   [`Payload::deserialize`].
///
/// `R` is a [`HandlerOutput`]: `()`, `Option<T>` or `Result<T, E>`.
///
/// You don't implement this: every such closure is one (`M` is inferred), and it is how
/// [`HubConnection::on`](crate::HubConnection::on) accepts plain closures.
pub trait Handler<M>: Send + Sync + 'static {
    /// Calls the handler with the arguments of one invocation.
    fn call(&self, arguments: Vec<Payload>) -> BoxFuture<'static, HandlerOutcome>;
}

impl<F, T, R> Handler<markers::Typed<T, R>> for F
where
    F: Fn(T) -> R + Send + Sync + 'static,
    T: DeserializeOwned + 'static,
    R: HandlerOutput,
{
    fn call(&self, arguments: Vec<Payload>) -> BoxFuture<'static, HandlerOutcome> {
        let outcome = match bind_arguments::<T>(&arguments) {
            Ok(args) => self(args).into_outcome(),
            Err(err) => HandlerOutcome::Error(err),
        };
        Box::pin(std::future::ready(outcome))
    }
}

impl<F, T, Fut> Handler<markers::TypedAsync<T, Fut>> for F
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    T: DeserializeOwned + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    fn call(&self, arguments: Vec<Payload>) -> BoxFuture<'static, HandlerOutcome> {
        match bind_arguments::<T>(&arguments) {
            Ok(args) => {
                let future = self(args);
                Box::pin(async move { future.await.into_outcome() })
            }
            Err(err) => Box::pin(std::future::ready(HandlerOutcome::Error(err))),
        }
    }
}

impl<F, R> Handler<markers::Raw<R>> for F
where
    F: Fn(Vec<Payload>) -> R + Send + Sync + 'static,
    R: HandlerOutput,
{
    fn call(&self, arguments: Vec<Payload>) -> BoxFuture<'static, HandlerOutcome> {
        Box::pin(std::future::ready(self(arguments).into_outcome()))
    }
}

impl<F, Fut> Handler<markers::RawAsync<Fut>> for F
where
    F: Fn(Vec<Payload>) -> Fut + Send + Sync + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HandlerOutput,
{
    fn call(&self, arguments: Vec<Payload>) -> BoxFuture<'static, HandlerOutcome> {
        let future = self(arguments);
        Box::pin(async move { future.await.into_outcome() })
    }
}

pub(crate) type ErasedHandler =
    Arc<dyn Fn(Vec<Payload>) -> BoxFuture<'static, HandlerOutcome> + Send + Sync>;

pub(crate) fn erase<M, H: Handler<M>>(handler: H) -> ErasedHandler {
    Arc::new(move |arguments| handler.call(arguments))
}

/// The handlers of every client method, keyed by lower-cased name (method names match
/// case-insensitively, docs/protocol.md, "Method names").
#[derive(Default)]
pub(crate) struct HandlerRegistry {
    next_id: Mutex<u64>,
    methods: Mutex<HashMap<String, Vec<(u64, ErasedHandler)>>>,
}

impl HandlerRegistry {
    pub(crate) fn add(&self, method: &str, handler: ErasedHandler) -> u64 {
        let id = {
            let mut next = lock(&self.next_id);
            *next += 1;
            *next
        };
        lock(&self.methods)
            .entry(method.to_lowercase())
            .or_default()
            .push((id, handler));
        id
    }

    pub(crate) fn remove(&self, method: &str, id: u64) {
        let mut methods = lock(&self.methods);
        let key = method.to_lowercase();
        if let Some(handlers) = methods.get_mut(&key) {
            handlers.retain(|(existing, _)| *existing != id);
            if handlers.is_empty() {
                methods.remove(&key);
            }
        }
    }

    pub(crate) fn remove_all(&self, method: &str) {
        lock(&self.methods).remove(&method.to_lowercase());
    }

    /// The handlers of `method` at this moment, in registration order.
    pub(crate) fn snapshot(&self, method: &str) -> Vec<ErasedHandler> {
        lock(&self.methods)
            .get(&method.to_lowercase())
            .map(|handlers| handlers.iter().map(|(_, h)| h.clone()).collect())
            .unwrap_or_default()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A registered handler. Dropping it (or calling [`Subscription::remove`]) removes the handler;
/// [`Subscription::detach`] keeps it for the lifetime of the connection.
#[must_use = "dropping a Subscription removes its handler at once; keep it, or call .detach()"]
pub struct Subscription {
    registry: Weak<HandlerRegistry>,
    method: String,
    id: u64,
    active: bool,
}

impl Subscription {
    pub(crate) fn new(registry: &Arc<HandlerRegistry>, method: &str, id: u64) -> Self {
        Subscription {
            registry: Arc::downgrade(registry),
            method: method.to_owned(),
            id,
            active: true,
        }
    }

    /// The client method name the handler is registered for.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Removes the handler now (the same as dropping the subscription).
    pub fn remove(self) {}

    /// Keeps the handler registered for as long as the connection exists.
    pub fn detach(mut self) {
        self.active = false;
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("method", &self.method)
            .field("active", &self.active)
            .finish()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.active
            && let Some(registry) = self.registry.upgrade()
        {
            registry.remove(&self.method, self.id);
        }
    }
}

/// Runs every handler of one invocation in registration order and decides the answer of a
/// client-result invocation as the TS client does (docs/protocol.md, "Client results"): no handler ->
/// `Client didn't provide a result.`; more than one result -> `Client provided multiple
/// results.`; a handler error (not followed by a successful handler) -> its text; one result ->
/// that value; no result -> `Client didn't provide a result.`.
///
/// Returns `None` when the invocation expects no answer.
pub(crate) async fn run_handlers(
    method: &str,
    handlers: Vec<ErasedHandler>,
    arguments: Vec<Payload>,
    expects_result: bool,
) -> Option<CompletionResult> {
    if handlers.is_empty() {
        tracing::warn!(method, "no client method with this name is registered");
        return expects_result
            .then(|| CompletionResult::Error("Client didn't provide a result.".to_owned()));
    }
    let mut result: Option<Payload> = None;
    let mut results = 0usize;
    let mut error: Option<String> = None;
    for handler in handlers {
        let call = AssertUnwindSafe(handler(arguments.clone())).catch_unwind();
        match call.await {
            Ok(HandlerOutcome::NoResult) => error = None,
            Ok(HandlerOutcome::Result(value)) => {
                results += 1;
                result = Some(value);
                error = None;
            }
            Ok(HandlerOutcome::Error(text)) => {
                tracing::error!(method, error = %text, "a client method handler failed");
                error = Some(text);
            }
            Err(_) => {
                tracing::error!(method, "a client method handler panicked");
                error = Some(format!("The handler of client method '{method}' panicked."));
            }
        }
    }
    if !expects_result {
        if result.is_some() {
            tracing::debug!(
                method,
                "a handler returned a result the server does not expect"
            );
        }
        return None;
    }
    Some(if results > 1 {
        tracing::error!(method, "multiple handlers returned a result");
        CompletionResult::Error("Client provided multiple results.".to_owned())
    } else if let Some(text) = error {
        CompletionResult::Error(text)
    } else if let Some(value) = result {
        CompletionResult::Value(value)
    } else {
        CompletionResult::Error("Client didn't provide a result.".to_owned())
    })
}

/// Binds an invocation's arguments to `T`, as a sequence.
pub(crate) fn bind_arguments<T: DeserializeOwned>(arguments: &[Payload]) -> Result<T, String> {
    T::deserialize(ArgumentsDeserializer(arguments))
        .map_err(|err| format!("Failed to bind the arguments of the invocation: {err}"))
}

/// The error of [`ArgumentsDeserializer`].
#[derive(Debug)]
struct BindError(String);

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BindError {}

impl de::Error for BindError {
    fn custom<M: Display>(msg: M) -> Self {
        BindError(msg.to_string())
    }
}

/// A serde deserializer presenting a list of payloads as one sequence, each element read by its
/// own protocol's deserializer (JSON text, MessagePack bytes, or a Rust value).
struct ArgumentsDeserializer<'de>(&'de [Payload]);

impl<'de> Deserializer<'de> for ArgumentsDeserializer<'de> {
    type Error = BindError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BindError> {
        visitor.visit_seq(ArgumentsSeq {
            items: self.0.iter(),
            index: 0,
        })
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BindError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, BindError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, BindError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, BindError> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct ArgumentsSeq<'de> {
    items: std::slice::Iter<'de, Payload>,
    index: usize,
}

impl<'de> SeqAccess<'de> for ArgumentsSeq<'de> {
    type Error = BindError;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, BindError> {
        let Some(payload) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        let at = |err: &dyn Display| BindError(format!("argument {index}: {err}"));
        let value = match payload {
            Payload::Json(bytes) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                let value = seed.deserialize(&mut de).map_err(|e| at(&e))?;
                de.end().map_err(|e| at(&e))?;
                value
            }
            Payload::MessagePack(bytes) => {
                let mut de = rmp_serde::Deserializer::from_read_ref(&bytes[..]);
                de.set_max_depth(128);
                seed.deserialize(&mut de).map_err(|e| at(&e))?
            }
            Payload::Value(value) => {
                let json = serde_json::to_value(&**value).map_err(|e| at(&e))?;
                seed.deserialize(json).map_err(|e| at(&e))?
            }
        };
        Ok(Some(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn json(text: &'static str) -> Payload {
        Payload::Json(Bytes::from_static(text.as_bytes()))
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Message {
        user: String,
        text: String,
    }

    #[test]
    fn binds_tuples_values_structs_and_vectors() {
        let args = vec![json("\"ann\""), json("\"hi\"")];
        assert_eq!(
            bind_arguments::<(String, String)>(&args),
            Ok(("ann".to_owned(), "hi".to_owned()))
        );
        assert_eq!(bind_arguments::<(String,)>(&args), Ok(("ann".to_owned(),)));
        assert_eq!(
            bind_arguments::<serde_json::Value>(&args),
            Ok(serde_json::json!(["ann", "hi"]))
        );
        assert_eq!(
            bind_arguments::<Message>(&args),
            Ok(Message {
                user: "ann".into(),
                text: "hi".into()
            })
        );
        assert_eq!(
            bind_arguments::<Vec<String>>(&args),
            Ok(vec!["ann".to_owned(), "hi".to_owned()])
        );
        assert_eq!(bind_arguments::<()>(&args), Ok(()));
        let err = bind_arguments::<(String, i32)>(&args).expect_err("wrong type");
        assert!(err.contains("argument 1"), "{err}");
        assert!(bind_arguments::<(String, String, String)>(&args).is_err());
    }

    #[test]
    fn binds_messagepack_and_rust_values() {
        let packed = rmp_serde::to_vec(&("bob", 7)).expect("encode");
        // [ "bob", 7 ] as two separate payloads
        let bob = rmp_serde::to_vec(&"bob").expect("encode");
        let seven = rmp_serde::to_vec(&7).expect("encode");
        let args = vec![
            Payload::MessagePack(Bytes::from(bob)),
            Payload::MessagePack(Bytes::from(seven)),
            Payload::from_value(vec![1, 2]),
        ];
        assert_eq!(
            bind_arguments::<(String, u8, Vec<u8>)>(&args),
            Ok(("bob".to_owned(), 7, vec![1, 2]))
        );
        assert!(!packed.is_empty());
    }

    fn handler<M, H: Handler<M>>(h: H) -> ErasedHandler {
        erase(h)
    }

    #[tokio::test]
    async fn result_rules_follow_the_ts_client() {
        let args = vec![json("2")];
        let double = handler(|(n,): (i32,)| Some(n * 2));
        let nothing = handler(|(_n,): (i32,)| {});
        let failing = handler(|(_n,): (i32,)| Err::<i32, _>("bad"));
        let asynchronous = handler(|(n,): (i32,)| async move { Ok::<_, String>(n + 1) });
        let raw = handler(|args: Vec<Payload>| Some(args.len()));

        let text = |r: Option<CompletionResult>| match r {
            Some(CompletionResult::Error(e)) => format!("error: {e}"),
            Some(CompletionResult::Value(v)) => format!("value: {v:?}"),
            Some(CompletionResult::Void) => "void".to_owned(),
            None => "none".to_owned(),
        };
        assert_eq!(
            text(run_handlers("m", vec![], args.clone(), true).await),
            "error: Client didn't provide a result."
        );
        assert_eq!(
            text(run_handlers("m", vec![double.clone()], args.clone(), true).await),
            "value: Value(4)"
        );
        assert_eq!(
            text(run_handlers("m", vec![asynchronous.clone()], args.clone(), true).await),
            "value: Value(3)"
        );
        assert_eq!(
            text(run_handlers("m", vec![raw], args.clone(), true).await),
            "value: Value(1)"
        );
        assert_eq!(
            text(run_handlers("m", vec![nothing.clone()], args.clone(), true).await),
            "error: Client didn't provide a result."
        );
        assert_eq!(
            text(run_handlers("m", vec![double.clone(), asynchronous], args.clone(), true).await),
            "error: Client provided multiple results."
        );
        assert_eq!(
            text(run_handlers("m", vec![failing.clone()], args.clone(), true).await),
            "error: bad"
        );
        assert_eq!(
            text(run_handlers("m", vec![failing, double.clone()], args.clone(), true).await),
            "value: Value(4)"
        );
        assert_eq!(
            text(run_handlers("m", vec![double, nothing], args.clone(), false).await),
            "none"
        );
    }
}
