//! Arguments of outgoing calls: plain serde values and client-to-server streams.

use std::fmt::Display;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use signalr_protocol::Payload;

/// One argument of an outgoing call, already split into a value or an upload stream.
pub enum Argument {
    /// A value, serialized by the hub protocol when the message is written.
    Value(Payload),
    /// A client-to-server stream (docs/protocol.md, "Client-to-server streams").
    Stream(ClientStream),
}

impl std::fmt::Debug for Argument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Argument::Value(payload) => f.debug_tuple("Value").field(payload).finish(),
            Argument::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// Something that can be one argument of `invoke`, `send` or `stream`: any `Serialize` value,
/// or a [`ClientStream`].
///
/// You don't implement this: it is implemented for those types.
pub trait IntoArgument {
    /// Converts the value.
    fn into_argument(self) -> Argument;
}

impl<T: Serialize + Send + Sync + 'static> IntoArgument for T {
    fn into_argument(self) -> Argument {
        Argument::Value(Payload::from_value(self))
    }
}

impl IntoArgument for ClientStream {
    fn into_argument(self) -> Argument {
        Argument::Stream(self)
    }
}

/// The arguments of an outgoing call: `()`, a tuple of up to 12 [`IntoArgument`]s (`("ann",)`,
/// `("ann", 42, ClientStream::new(items))`), a `Vec<Payload>` or a `Vec<serde_json::Value>`.
///
/// A one-argument call needs the trailing comma of a one-element tuple: `("hi",)`.
///
/// You don't implement this: it is implemented for those types.
pub trait IntoArguments {
    /// The arguments in order.
    fn into_arguments(self) -> Vec<Argument>;
}

impl IntoArguments for () {
    fn into_arguments(self) -> Vec<Argument> {
        Vec::new()
    }
}

impl IntoArguments for Vec<Payload> {
    fn into_arguments(self) -> Vec<Argument> {
        self.into_iter().map(Argument::Value).collect()
    }
}

impl IntoArguments for Vec<serde_json::Value> {
    fn into_arguments(self) -> Vec<Argument> {
        self.into_iter()
            .map(|v| Argument::Value(Payload::from_value(v)))
            .collect()
    }
}

impl IntoArguments for Vec<Argument> {
    fn into_arguments(self) -> Vec<Argument> {
        self
    }
}

macro_rules! impl_into_arguments {
    ($($arg:ident),*) => {
        impl<$($arg: IntoArgument),*> IntoArguments for ($($arg,)*) {
            #[allow(non_snake_case)]
            fn into_arguments(self) -> Vec<Argument> {
                let ($($arg,)*) = self;
                vec![$($arg.into_argument()),*]
            }
        }
    };
}

impl_into_arguments!(A1);
impl_into_arguments!(A1, A2);
impl_into_arguments!(A1, A2, A3);
impl_into_arguments!(A1, A2, A3, A4);
impl_into_arguments!(A1, A2, A3, A4, A5);
impl_into_arguments!(A1, A2, A3, A4, A5, A6);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7, A8);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7, A8, A9);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11);
impl_into_arguments!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12);

/// A client-to-server (upload) stream argument (docs/protocol.md, "Client-to-server streams"): the hub method receives it as
/// a stream parameter (`UploadStream<T>` on a Rust server, `IAsyncEnumerable<T>` /
/// `ChannelReader<T>` in ASP.NET).
///
/// Put it among the arguments of `invoke`, `send` or `stream`. The client takes it out of the
/// argument list, names it in the invocation's `streamIds`, then sends each item as a StreamItem
/// and ends with a Completion (with the error text if a [`ClientStream::try_new`] stream yields
/// an `Err`). Items are sent as they are produced, in order, after the invocation itself.
///
/// ```no_run
/// # async fn demo(connection: signalr_hub_client::HubConnection) -> Result<(), signalr_hub_client::Error> {
/// use signalr_hub_client::ClientStream;
///
/// let items = futures_util::stream::iter(vec![1, 2, 3]);
/// let sum: i64 = connection.invoke("Sum", (ClientStream::new(items),)).await?;
/// # Ok(()) }
/// ```
pub struct ClientStream {
    pub(crate) items: BoxStream<'static, Result<Payload, String>>,
}

impl ClientStream {
    /// Streams every item of `stream`; ends the upload with a plain Completion when `stream` ends.
    pub fn new<S, T>(stream: S) -> Self
    where
        S: Stream<Item = T> + Send + 'static,
        T: Serialize + Send + Sync + 'static,
    {
        ClientStream {
            items: stream.map(|item| Ok(Payload::from_value(item))).boxed(),
        }
    }

    /// Streams the `Ok` items of `stream`; the first `Err` ends the upload with a Completion
    /// carrying the error's text (the server's stream parameter then fails with it).
    pub fn try_new<S, T, E>(stream: S) -> Self
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + Sync + 'static,
        E: Display,
    {
        ClientStream {
            items: stream
                .map(|item| item.map(Payload::from_value).map_err(|e| e.to_string()))
                .boxed(),
        }
    }
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientStream(..)")
    }
}
