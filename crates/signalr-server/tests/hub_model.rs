//! Hub model additions shared by both front doors, seen through the ASP.NET Core protocol:
//! errors with data, overloads by argument count, caller state and progress (inert for Core
//! callers), `stop_called`, `on_reconnected`, the outgoing filter hook and connect
//! authorization.
//!
//! Every test ends with [`finish`]: a fresh connection still works and no server-side panic
//! happened.

mod common;
#[path = "common/runtime.rs"]
mod runtime;

use common::finish;
use runtime::{connect, serve};
use serde_json::json;
use signalr_server::{Hub, HubCallerContext, HubError};

// ---------------------------------------------------------------------------------------------
// Errors with data
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_data_is_not_sent_to_core_clients() {
    let server = serve(
        Hub::builder()
            .method("WithData", |_: HubCallerContext| async move {
                Err::<(), _>(HubError::with_data("boom", json!({ "Code": 42 })))
            })
            .method("Plain", |_: HubCallerContext| async move {
                Err::<(), _>(HubError::new("boom"))
            }),
    )
    .await;
    let mut a = connect(&server).await;
    let expected =
        "An unexpected error occurred invoking 'WithData' on the server. HubException: boom";
    let with_data = a.call("1", "WithData", json!([])).await;
    with_data.assert_error(expected);
    assert_eq!(
        with_data.0,
        json!({ "type": 3, "invocationId": "1", "error": expected }),
        "nothing but the error text"
    );
    a.call("2", "Plain", json!([]))
        .await
        .assert_error(&expected.replace("WithData", "Plain"));
    finish(&server).await;
}
