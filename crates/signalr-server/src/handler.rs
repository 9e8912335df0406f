//! Hub method signatures: how parameters are bound (serde arguments, upload streams, application
//! state) and what a method may return (a value, `Result<T, HubError>`, or a stream).

use std::any::TypeId;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use signalr_protocol::Payload;
use tokio::sync::mpsc;

use crate::context::HubCallerContext;
use crate::error::HubError;

/// What a hub method produced.
pub enum MethodOutput {
    /// The method returned nothing: the Completion has no `result`.
    Void,
    /// The method returned a value.
    Value(Payload),
    /// A server-to-client stream (docs/protocol.md, "Server-to-client streams"): each item becomes a StreamItem; an error ends
    /// the stream with a Completion error.
    Stream(BoxStream<'static, Result<Payload, HubError>>),
}

impl std::fmt::Debug for MethodOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MethodOutput::Void => f.write_str("Void"),
            MethodOutput::Value(value) => f.debug_tuple("Value").field(value).finish(),
            MethodOutput::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Why an invocation could not run or failed.
#[derive(Debug)]
pub enum InvokeError {
    /// The arguments did not bind. The text is the detail shown with detailed errors
    /// (`InvalidDataException: ...`).
    Binding(String),
    /// The method (or a filter) returned an error.
    Method(HubError),
}

impl From<HubError> for InvokeError {
    fn from(err: HubError) -> Self {
        InvokeError::Method(err)
    }
}

/// Markers that keep the implementations of [`IntoHubResult`] and [`IntoStreamItem`] apart; they
/// are inferred and never named by users.
#[doc(hidden)]
pub mod markers {
    /// A plain value.
    #[derive(Debug)]
    pub enum Value {}
    /// `Result<T, HubError>`.
    #[derive(Debug)]
    pub enum Fallible {}
    /// A stream whose items use the inner marker.
    #[derive(Debug)]
    pub struct Streaming<M>(std::marker::PhantomData<M>);
}

/// What a hub method's future may return:
/// - `()`: the Completion carries no result;
/// - any `Serialize` value: the Completion's `result`;
/// - `Result<T, HubError>`;
/// - a `Stream` of `T` or of `Result<T, HubError>`: a streaming method, called with
///   StreamInvocation (docs/protocol.md, "Server-to-client streams").
///
/// You don't implement this: it is implemented for the types above, and it is how
/// [`HubBuilder::method`](crate::HubBuilder::method) tells plain and streaming methods apart
/// (`Marker` is inferred).
pub trait IntoHubResult<Marker>: Send + 'static {
    /// Whether methods returning this type are streaming methods.
    const STREAMING: bool;
    /// Converts the return value.
    ///
    /// # Errors
    /// The method's [`HubError`].
    fn into_output(self) -> Result<MethodOutput, HubError>;
}

fn value_output<T: Serialize + Send + Sync + 'static>(value: T) -> MethodOutput {
    if TypeId::of::<T>() == TypeId::of::<()>() {
        MethodOutput::Void
    } else {
        MethodOutput::Value(Payload::from_value(value))
    }
}

impl<T: Serialize + Send + Sync + 'static> IntoHubResult<markers::Value> for T {
    const STREAMING: bool = false;
    fn into_output(self) -> Result<MethodOutput, HubError> {
        Ok(value_output(self))
    }
}

impl<T: Serialize + Send + Sync + 'static> IntoHubResult<markers::Fallible>
    for Result<T, HubError>
{
    const STREAMING: bool = false;
    fn into_output(self) -> Result<MethodOutput, HubError> {
        self.map(value_output)
    }
}

/// An item of a server-to-client stream: `T: Serialize` or `Result<T, HubError>`.
///
/// You don't implement this: it is implemented for those types (`Marker` is inferred).
pub trait IntoStreamItem<Marker>: Send + 'static {
    /// Converts the item.
    ///
    /// # Errors
    /// The item's [`HubError`], which ends the stream.
    fn into_item(self) -> Result<Payload, HubError>;
}

impl<T: Serialize + Send + Sync + 'static> IntoStreamItem<markers::Value> for T {
    fn into_item(self) -> Result<Payload, HubError> {
        Ok(Payload::from_value(self))
    }
}

impl<T: Serialize + Send + Sync + 'static> IntoStreamItem<markers::Fallible>
    for Result<T, HubError>
{
    fn into_item(self) -> Result<Payload, HubError> {
        self.map(Payload::from_value)
    }
}

impl<S, M> IntoHubResult<markers::Streaming<M>> for S
where
    S: Stream + Send + 'static,
    S::Item: IntoStreamItem<M>,
    M: 'static,
{
    const STREAMING: bool = true;
    fn into_output(self) -> Result<MethodOutput, HubError> {
        Ok(MethodOutput::Stream(
            self.map(IntoStreamItem::into_item).boxed(),
        ))
    }
}

/// The application state handed to hub methods, like axum's `State`: register it with
/// [`HubBuilder::state`](crate::HubBuilder::state) and take `State<T>` as a parameter.
/// It does not count as a client argument.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

/// Where a method's progress reports go: the classic front door turns each into a progress
/// message for the caller. Must not block.
pub(crate) type ProgressSink = std::sync::Arc<dyn Fn(Payload) + Send + Sync>;

/// A progress parameter (classic SignalR's `IProgress<T>` hub-method parameter): the method
/// reports intermediate values while it runs; a classic JavaScript client receives each one in
/// the `progress` callback of the call's promise, before the result.
///
/// It is supplied by the server, not sent by the client: it does not count as a client
/// argument, and a classic client calls `CountWithProgress(n)` with one argument. For ASP.NET
/// Core clients, which have no progress messages, and wherever no classic call is in progress,
/// reports are dropped ([`Progress::is_inert`]).
///
/// ```
/// use signalr_server::{Hub, HubCallerContext, hub::Progress};
///
/// let hub = Hub::builder()
///     // JS: proxy.invoke("CountWithProgress", 3).progress(n => ...).done(text => ...)
///     .method("CountWithProgress", |_: HubCallerContext, n: u32, progress: Progress<u32>| async move {
///         for i in 1..=n {
///             progress.report(i);
///         }
///         "done"
///     })
///     .build();
/// # drop(hub);
/// ```
pub struct Progress<T> {
    sink: Option<ProgressSink>,
    _item: std::marker::PhantomData<fn(T)>,
}

impl<T> Clone for Progress<T> {
    fn clone(&self) -> Self {
        Progress {
            sink: self.sink.clone(),
            _item: std::marker::PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Progress<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("inert", &self.sink.is_none())
            .finish()
    }
}

impl<T: Serialize + Send + Sync + 'static> Progress<T> {
    /// Reports `value` to the caller. Never blocks: the report is queued for the connection (or
    /// dropped when the progress is inert or the connection is gone). Reports sent after the
    /// method returned may arrive after its result, as in classic SignalR; don't keep clones
    /// beyond the call.
    pub fn report(&self, value: T) {
        if let Some(sink) = &self.sink {
            sink(Payload::from_value(value));
        }
    }

    /// Whether reports are dropped: the caller is not a classic client's hub method call.
    pub fn is_inert(&self) -> bool {
        self.sink.is_none()
    }
}

impl<T: Serialize + Send + Sync + 'static> HubArgument for Progress<T> {
    const KIND: ArgumentKind = ArgumentKind::Injected;
    fn bind(source: &mut ArgumentSource<'_>) -> Result<Self, String> {
        Ok(Progress {
            sink: source.caller.progress.clone(),
            _item: std::marker::PhantomData,
        })
    }
}

impl HubArgument for crate::context::CallerState {
    const KIND: ArgumentKind = ArgumentKind::Injected;
    fn bind(source: &mut ArgumentSource<'_>) -> Result<Self, String> {
        Ok(source.caller.caller_state().clone())
    }
}

/// A client-to-server stream parameter (docs/protocol.md, "Client-to-server streams"): the client passes a stream (a
/// `Subject` in JavaScript) as the argument, its items arrive here as they are sent.
///
/// Items are `Ok(T)`; an item that does not bind to `T`, or the client completing the stream with
/// an error, yields one `Err(message)` and ends the stream. The server buffers up to
/// [`HubOptions::stream_buffer_capacity`](crate::HubOptions::stream_buffer_capacity) items per
/// stream; beyond that the connection's reading waits (back-pressure).
pub struct UploadStream<T> {
    receiver: mpsc::Receiver<Result<Payload, String>>,
    done: bool,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for UploadStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStream")
            .field("done", &self.done)
            .finish()
    }
}

impl<T: DeserializeOwned> Stream for UploadStream<T> {
    type Item = Result<T, String>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(Ok(payload))) => match payload.deserialize::<T>() {
                Ok(item) => Poll::Ready(Some(Ok(item))),
                Err(err) => {
                    self.done = true;
                    Poll::Ready(Some(Err(err.to_string())))
                }
            },
            Poll::Ready(Some(Err(error))) => {
                self.done = true;
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// How a parameter is bound.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgumentKind {
    /// From the invocation's `arguments`, with serde.
    Value,
    /// From the invocation's `streamIds` (an upload stream).
    Stream,
    /// Supplied by the server (application state, progress, caller state); not sent by the
    /// client.
    Injected,
}

/// Where parameters are bound from.
#[doc(hidden)]
pub struct ArgumentSource<'a> {
    pub(crate) values: std::slice::Iter<'a, Payload>,
    pub(crate) streams: std::vec::IntoIter<mpsc::Receiver<Result<Payload, String>>>,
    pub(crate) caller: &'a HubCallerContext,
}

impl std::fmt::Debug for ArgumentSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgumentSource")
            .field("values_left", &self.values.len())
            .field("streams_left", &self.streams.len())
            .finish_non_exhaustive()
    }
}

/// A parameter of a hub method: any `DeserializeOwned` type (a client argument),
/// [`UploadStream<T>`], [`State<T>`], [`Progress<T>`] or [`CallerState`](crate::context::CallerState).
///
/// A client argument is bound with serde. For ASP.NET Core clients binding is strict, as
/// System.Text.Json's is. For classic SignalR 2.x clients it converts as JSON.NET does in a
/// SignalR 2.4 server, which jQuery pages rely on: `"12"` binds to an integer, `" 1,234.5 "` to
/// a float, `"true"` or `1` to a bool, a number or bool to a string (`5` → `"5"`, `2e0` →
/// `"2.0"`), struct fields match keys ignoring case, enum variants names ignoring case. Still
/// refused: a fraction for an integer (`1.5`, `2.0`, `"1.0"`), text that is no number, objects or
/// arrays for scalars, a bare value for a sequence, an array for a struct.
///
/// You don't implement this: it is implemented for the types above, and it is how
/// [`HubBuilder::method`](crate::HubBuilder::method) binds a method's parameters.
pub trait HubArgument: Sized + Send + 'static {
    /// How the parameter is bound.
    #[doc(hidden)]
    const KIND: ArgumentKind;
    /// Binds the parameter.
    #[doc(hidden)]
    fn bind(source: &mut ArgumentSource<'_>) -> Result<Self, String>;
}

const BINDING_ERROR: &str = "InvalidDataException: Error binding arguments. Make sure that the types of the provided values match the types of the hub method being invoked.";

impl<T: DeserializeOwned + Send + 'static> HubArgument for T {
    const KIND: ArgumentKind = ArgumentKind::Value;
    fn bind(source: &mut ArgumentSource<'_>) -> Result<Self, String> {
        let payload = source
            .values
            .next()
            .ok_or_else(|| BINDING_ERROR.to_owned())?;
        // Classic callers bind as JSON.NET does (strings to numbers, numbers to strings, ...);
        // ASP.NET Core callers strictly, as System.Text.Json does.
        let bound = if source.caller.protocol().is_none() {
            crate::lenient::from_payload::<T>(payload)
        } else {
            payload.deserialize::<T>().map_err(|err| err.0)
        };
        bound.map_err(|err| {
            tracing::debug!(%err, "hub method argument failed to bind");
            BINDING_ERROR.to_owned()
        })
    }
}

impl<T: DeserializeOwned + Send + 'static> HubArgument for UploadStream<T> {
    const KIND: ArgumentKind = ArgumentKind::Stream;
    fn bind(source: &mut ArgumentSource<'_>) -> Result<Self, String> {
        let receiver = source
            .streams
            .next()
            .ok_or_else(|| BINDING_ERROR.to_owned())?;
        Ok(UploadStream {
            receiver,
            done: false,
            _item: std::marker::PhantomData,
        })
    }
}

impl<T: Clone + Send + Sync + 'static> HubArgument for State<T> {
    const KIND: ArgumentKind = ArgumentKind::Injected;
    fn bind(source: &mut ArgumentSource<'_>) -> Result<Self, String> {
        source.caller.state::<T>().map(State).ok_or_else(|| {
            format!(
                "InvalidOperationException: no application state of type {} was registered with HubBuilder::state",
                std::any::type_name::<T>()
            )
        })
    }
}

/// The erased form every hub method is stored as.
pub(crate) type ErasedMethod = std::sync::Arc<
    dyn Fn(
            HubCallerContext,
            Vec<Payload>,
            Vec<mpsc::Receiver<Result<Payload, String>>>,
        ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>>
        + Send
        + Sync,
>;

/// A function usable as a hub method: `async fn(HubCallerContext, A1, ..., An) -> R` with up to 12
/// parameters, each a [`HubArgument`], and `R:` [`IntoHubResult`].
///
/// Client arguments are bound from JSON or MessagePack with serde; a count or type mismatch
/// answers ASP.NET's `Failed to invoke '<m>' due to an error on the server.` (docs/protocol.md, "Completions").
///
/// You don't implement this: every such function or closure is one (`Args` is inferred), and it
/// is how [`HubBuilder::method`](crate::HubBuilder::method) accepts plain functions.
pub trait HubMethod<Args>: Clone + Send + Sync + 'static {
    /// Whether the method returns a stream.
    #[doc(hidden)]
    const STREAMING: bool;
    /// The kinds of the parameters after the caller context, in order.
    #[doc(hidden)]
    fn parameter_kinds() -> Vec<ArgumentKind>;
    /// Binds the arguments and runs the method.
    #[doc(hidden)]
    fn call(
        &self,
        caller: HubCallerContext,
        values: Vec<Payload>,
        streams: Vec<mpsc::Receiver<Result<Payload, String>>>,
    ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>>;
}

/// Invokes `$m!` once per supported parameter count, 0 to 12.
macro_rules! for_each_arity {
    ($m:ident) => {
        $m!();
        $m!(A1);
        $m!(A1, A2);
        $m!(A1, A2, A3);
        $m!(A1, A2, A3, A4);
        $m!(A1, A2, A3, A4, A5);
        $m!(A1, A2, A3, A4, A5, A6);
        $m!(A1, A2, A3, A4, A5, A6, A7);
        $m!(A1, A2, A3, A4, A5, A6, A7, A8);
        $m!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
        $m!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
        $m!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
        $m!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);
    };
}

/// Binds a tuple of parameters from one invocation.
#[doc(hidden)]
pub(crate) trait BindAll: Sized {
    fn bind_all(source: &mut ArgumentSource<'_>) -> Result<Self, String>;
}

macro_rules! impl_bind_all {
    ($($arg:ident),*) => {
        impl<$($arg: HubArgument),*> BindAll for ($($arg,)*) {
            #[allow(unused_variables)]
            fn bind_all(source: &mut ArgumentSource<'_>) -> Result<Self, String> {
                Ok(($($arg::bind(source)?,)*))
            }
        }
    };
}

for_each_arity!(impl_bind_all);

fn bind_all<T: BindAll>(
    caller: &HubCallerContext,
    values: &[Payload],
    streams: Vec<UploadReceiver>,
) -> Result<T, String> {
    let mut source = ArgumentSource {
        values: values.iter(),
        streams: streams.into_iter(),
        caller,
    };
    T::bind_all(&mut source)
}

/// The receiving end of one upload stream.
pub(crate) type UploadReceiver = mpsc::Receiver<Result<Payload, String>>;

macro_rules! impl_hub_method {
    ($($arg:ident),*) => {
        impl<F, Fut, R, M $(, $arg)*> HubMethod<(M, $($arg,)*)> for F
        where
            F: Fn(HubCallerContext $(, $arg)*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: IntoHubResult<M>,
            $($arg: HubArgument,)*
        {
            const STREAMING: bool = R::STREAMING;

            fn parameter_kinds() -> Vec<ArgumentKind> {
                vec![$($arg::KIND),*]
            }

            #[allow(non_snake_case, unused_mut, unused_variables)]
            fn call(
                &self,
                caller: HubCallerContext,
                values: Vec<Payload>,
                streams: Vec<mpsc::Receiver<Result<Payload, String>>>,
            ) -> BoxFuture<'static, Result<MethodOutput, InvokeError>> {
                let bound = bind_all::<($($arg,)*)>(&caller, &values, streams);
                match bound {
                    Ok(($($arg,)*)) => {
                        let future = (self)(caller $(, $arg)*);
                        Box::pin(async move { Ok(future.await.into_output()?) })
                    }
                    Err(detail) => Box::pin(async move { Err(InvokeError::Binding(detail)) }),
                }
            }
        }
    };
}

for_each_arity!(impl_hub_method);

/// Arguments of a client method call: `()`, a tuple of up to 12 `Serialize` values, or a
/// `Vec<Payload>`.
///
/// You don't implement this: it is implemented for those types, and it is how
/// [`ClientProxy::send`](crate::clients::ClientProxy::send) takes any number of arguments.
pub trait IntoArguments {
    /// The arguments as payloads, serialized later by each connection's protocol.
    fn into_arguments(self) -> Vec<Payload>;
}

impl IntoArguments for Vec<Payload> {
    fn into_arguments(self) -> Vec<Payload> {
        self
    }
}

macro_rules! impl_into_arguments {
    ($($arg:ident),*) => {
        impl<$($arg: Serialize + Send + Sync + 'static),*> IntoArguments for ($($arg,)*) {
            #[allow(non_snake_case, clippy::unused_unit)]
            fn into_arguments(self) -> Vec<Payload> {
                let ($($arg,)*) = self;
                vec![$(Payload::from_value($arg)),*]
            }
        }
    };
}

for_each_arity!(impl_into_arguments);
