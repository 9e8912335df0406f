//! A console stock ticker on the classic (SignalR 2.x) client, in the style of the "ASP.NET
//! SignalR Hubs API Guide – .NET Client": a `HubConnection` to `/signalr`, a proxy of
//! `StockTickerHub`, `On("updateStockPrice", …)`, `Invoke<T>("GetAllStocks")`, connection events.
//!
//! With the demo server running (`./scripts/demo.sh`, http://127.0.0.1:5000):
//!
//! ```sh
//! cargo run -p signalr-hub-client --example classic_stock_ticker -- http://127.0.0.1:5000/
//! cargo run -p signalr-hub-client --example classic_stock_ticker -- http://127.0.0.1:5000/ longPolling
//! ```
//!
//! Type `open`, `close` or `reset` (then Enter) to drive the market; `quit` or Ctrl-D stops.

use serde::Deserialize;
use signalr_hub_client::classic::{ClassicHubConnection, ClassicTransport};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A stock as the demo's hub sends it (camelCase names).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stock {
    symbol: String,
    price: f64,
    change: f64,
    percent_change: f64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:5000/".to_owned());
    let transport = match args.next().as_deref() {
        None | Some("auto") => ClassicTransport::Auto,
        Some("webSockets") => ClassicTransport::WebSockets,
        Some("serverSentEvents") => ClassicTransport::ServerSentEvents,
        Some("longPolling") => ClassicTransport::LongPolling,
        Some(other) => return Err(format!("unknown transport '{other}'").into()),
    };

    let connection = ClassicHubConnection::builder(url)
        .with_transport(transport)
        .build()?;
    connection.on_state_changed(|change| {
        eprintln!("[state] {:?} -> {:?}", change.old_state, change.new_state);
    });
    connection.on_connection_slow(|| eprintln!("[slow] no keep-alive for a while"));
    connection.on_reconnecting(|| eprintln!("[reconnecting]"));
    connection.on_reconnected(|| eprintln!("[reconnected]"));
    connection.on_error(|err| eprintln!("[error] {err}"));
    connection.on_closed(|| eprintln!("[closed]"));

    let stock_ticker = connection.create_hub_proxy("StockTickerHub");
    stock_ticker
        .on("updateStockPrice", |(stock,): (Stock,)| {
            println!(
                "{:<6} {:>9.2} {:>+8.2} ({:>+6.2} %)",
                stock.symbol,
                stock.price,
                stock.change,
                stock.percent_change * 100.0
            );
        })
        .detach();
    stock_ticker
        .on("marketOpened", |(): ()| println!("-- market opened"))
        .detach();
    stock_ticker
        .on("marketClosed", |(): ()| println!("-- market closed"))
        .detach();
    stock_ticker
        .on("marketReset", |(): ()| println!("-- market reset"))
        .detach();

    connection.start().await?;
    eprintln!(
        "connected: id {}, transport {}",
        connection.connection_id().unwrap_or_default(),
        connection.transport().map_or("?", ClassicTransport::name)
    );
    let stocks: Vec<Stock> = stock_ticker.invoke("GetAllStocks", ()).await?;
    for stock in &stocks {
        println!("{:<6} {:>9.2}", stock.symbol, stock.price);
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let method = match line.trim() {
            "open" => "OpenMarket",
            "close" => "CloseMarket",
            "reset" => "Reset",
            "quit" => break,
            "" => continue,
            other => {
                eprintln!("unknown command '{other}': open, close, reset, quit");
                continue;
            }
        };
        if let Err(err) = stock_ticker.invoke_void(method, ()).await {
            eprintln!("{method} failed: {err}");
        }
    }
    connection.stop().await;
    Ok(())
}
