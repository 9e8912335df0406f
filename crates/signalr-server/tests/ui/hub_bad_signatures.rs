use signalr_server::{HubCallerContext, hub};

#[derive(Default)]
struct ChatHub;

#[hub]
impl ChatHub {
    fn not_async(&self, _ctx: HubCallerContext) {}

    async fn mutable(&mut self, _ctx: HubCallerContext) {}

    async fn no_context(&self, _text: String) {}

    async fn no_receiver(_ctx: HubCallerContext) {}

    #[on_connected]
    async fn connected(&self) {}

    #[hub_method(skip)]
    fn helper(&mut self) {}
}

fn main() {
    let _ = ChatHub::hub_builder();
}
