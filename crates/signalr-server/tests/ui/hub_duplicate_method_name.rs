use signalr_server::{HubCallerContext, hub};

#[derive(Default)]
struct ChatHub;

#[hub]
impl ChatHub {
    async fn send_message(&self, _ctx: HubCallerContext, _text: String) {}

    // `SendMessage` already exists: names are matched ignoring case.
    #[hub_method(name = "SENDMESSAGE")]
    async fn send_loud(&self, _ctx: HubCallerContext, _text: String) {}

    async fn echo(&self, _ctx: HubCallerContext, value: String) -> String {
        value
    }

    // Renamed onto `Echo`.
    #[hub_method(name = "echo")]
    async fn echo_again(&self, _ctx: HubCallerContext, value: String) -> String {
        value
    }
}

fn main() {
    let _ = ChatHub::hub_builder();
}
