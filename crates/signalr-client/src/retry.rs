//! Automatic reconnect policies (the official clients' `IRetryPolicy`).

use std::time::Duration;

use crate::Error;

/// What a [`RetryPolicy`] knows when it picks the next delay.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryContext {
    /// How many reconnect attempts have failed so far: 0 when the connection has just been lost
    /// (the delay before the first attempt), 1 after the first attempt failed, and so on.
    pub previous_retry_count: u32,
    /// Time since the connection was lost (0 for the first call).
    pub elapsed: Duration,
    /// Why the next attempt is needed: the error that broke the connection (first call) or the
    /// error of the last failed attempt.
    pub retry_reason: Error,
}

/// Decides whether and when the connection tries to reconnect after it was lost
/// (TS `IRetryPolicy`, .NET `IRetryPolicy`).
///
/// Installed with [`HubConnectionBuilder::with_retry_policy`](crate::HubConnectionBuilder::with_retry_policy).
/// A closure `Fn(&RetryContext) -> Option<Duration>` is a policy too.
///
/// ```
/// use std::time::Duration;
/// use signalr_hub_client::{HubConnectionBuilder, RetryContext};
///
/// // Retry every second for a minute, then give up.
/// let connection = HubConnectionBuilder::new()
///     .with_url("http://127.0.0.1:5000/chat")
///     .with_retry_policy(|context: &RetryContext| {
///         (context.elapsed < Duration::from_secs(60)).then_some(Duration::from_secs(1))
///     })
///     .build()
///     .unwrap();
/// # drop(connection);
/// ```
pub trait RetryPolicy: Send + Sync + 'static {
    /// The delay before the next reconnect attempt, or `None` to stop reconnecting: the
    /// connection then becomes `Disconnected` and the closed handlers run.
    fn next_retry_delay(&self, context: &RetryContext) -> Option<Duration>;
}

impl<F> RetryPolicy for F
where
    F: Fn(&RetryContext) -> Option<Duration> + Send + Sync + 'static,
{
    fn next_retry_delay(&self, context: &RetryContext) -> Option<Duration> {
        self(context)
    }
}

/// The policy of `with_automatic_reconnect()`: a fixed list of delays, one per attempt.
///
/// The default waits 0, 2, 10 and 30 seconds before the four attempts, then gives up (the TS
/// client's `DefaultReconnectPolicy`, docs/protocol.md, "Defaults").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRetryPolicy {
    delays: Vec<Duration>,
}

impl DefaultRetryPolicy {
    /// The delays before each attempt; after the last one the connection gives up.
    pub fn new(delays: Vec<Duration>) -> Self {
        DefaultRetryPolicy { delays }
    }

    /// The delays, in attempt order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }
}

impl Default for DefaultRetryPolicy {
    fn default() -> Self {
        DefaultRetryPolicy::new(vec![
            Duration::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(10),
            Duration::from_secs(30),
        ])
    }
}

impl RetryPolicy for DefaultRetryPolicy {
    fn next_retry_delay(&self, context: &RetryContext) -> Option<Duration> {
        self.delays
            .get(usize::try_from(context.previous_retry_count).ok()?)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn default_policy_is_0_2_10_30_then_none() {
        let policy = DefaultRetryPolicy::default();
        let delays: Vec<Option<Duration>> = (0..6)
            .map(|count| {
                policy.next_retry_delay(&RetryContext {
                    previous_retry_count: count,
                    elapsed: Duration::ZERO,
                    retry_reason: Error::new(Kind::Closed, "x"),
                })
            })
            .collect();
        assert_eq!(
            delays,
            vec![
                Some(Duration::ZERO),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(30)),
                None,
                None
            ]
        );
    }
}
