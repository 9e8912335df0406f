use signalr_server::{HubCallerContext, hub, hub_client};

#[hub_client]
trait ChatClient {
    async fn receive_message(&self, user: String, text: String);
}

#[derive(Default)]
struct ChatHub;

#[hub]
impl ChatHub {
    async fn send_message(&self, ctx: HubCallerContext, text: String) {
        // `user` is a `String`, not a number.
        ctx.clients().all().receive_message(42, text).await;
    }
}

fn main() {
    let _ = ChatHub::hub_builder();
}
