//! The stock ticker of ASP.NET's SignalR tutorial (`/hubs/stocks`, and `StockTickerHub` at
//! `/signalr` for classic clients): a background task moves prices while the market is open and
//! broadcasts each change through the hub's [`HubContext`], outside any hub method.
//!
//! Client → server: `GetAllStocks()`, `GetHistory()`, `GetMarketState()`, `OpenMarket()`,
//! `CloseMarket()`, `Reset()`, `Whoami()`.
//! Server → client: `UpdateStockPrice(stock)`, `MarketOpened()`, `MarketClosed()`,
//! `MarketReset(stocks)`.
//!
//! On a backplane, one server runs the market and its broadcasts reach the stock clients of every
//! server. A server started with `--no-market` has none: it answers no stocks, no history and
//! the state `Elsewhere`, and refuses to open, close or reset (that is done where the market is).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use signalr_redis::RedisBackplane;
use signalr_server::{
    Hub, HubCallerContext, HubContext, HubError, clients::IntoArguments, error::SendError,
};
use tokio::sync::Mutex;

use crate::stats::Stats;

/// How often prices may move.
pub const TICK: Duration = Duration::from_millis(250);
/// The chance that one stock moves on one tick.
pub const MOVE_CHANCE: f64 = 0.35;
/// The largest move of one tick, as a fraction of the price.
pub const RANGE_PERCENT: f64 = 0.004;
/// Prices kept per stock for the chart.
pub const HISTORY_POINTS: usize = 200;

const INITIAL: [(&str, f64); 5] = [
    ("MSFT", 420.55),
    ("AAPL", 228.10),
    ("GOOG", 171.30),
    ("AMZN", 185.70),
    ("NVDA", 131.40),
];

/// One stock, as clients see it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    /// The ticker symbol.
    pub symbol: String,
    /// The price.
    pub price: f64,
    /// The price when the market opened (or was reset).
    pub day_open: f64,
    /// The lowest price of the day.
    pub day_low: f64,
    /// The highest price of the day.
    pub day_high: f64,
    /// The last move.
    pub last_change: f64,
    /// `price - day_open`.
    pub change: f64,
    /// `change / day_open`, as a fraction.
    pub percent_change: f64,
}

impl Stock {
    fn new(symbol: &str, price: f64) -> Self {
        Stock {
            symbol: symbol.to_owned(),
            price,
            day_open: price,
            day_low: price,
            day_high: price,
            last_change: 0.0,
            change: 0.0,
            percent_change: 0.0,
        }
    }

    /// Moves the price by `fraction` of itself (rounded to cents, at least one cent when
    /// `fraction` is not zero).
    pub fn apply(&mut self, fraction: f64) {
        let mut change = (self.price * fraction * 100.0).round() / 100.0;
        if change == 0.0 && fraction != 0.0 {
            change = 0.01_f64.copysign(fraction);
        }
        self.price = ((self.price + change).max(0.01) * 100.0).round() / 100.0;
        self.last_change = change;
        self.day_low = self.day_low.min(self.price);
        self.day_high = self.day_high.max(self.price);
        self.change = ((self.price - self.day_open) * 100.0).round() / 100.0;
        self.percent_change = self.change / self.day_open;
    }
}

/// Whether the market is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MarketState {
    /// Prices move.
    Open,
    /// Prices stand still.
    Closed,
    /// This server runs no market (`--no-market`): another server on the backplane does.
    Elsewhere,
}

/// What a server without a market answers to `OpenMarket`, `CloseMarket` and `Reset`.
pub const NO_MARKET_HERE: &str =
    "This server runs no stock market: open, close and reset it on the server that runs it.";

#[derive(Debug)]
struct Market {
    state: MarketState,
    stocks: Vec<Stock>,
    history: BTreeMap<String, VecDeque<f64>>,
}

impl Market {
    fn new() -> Self {
        let stocks: Vec<Stock> = INITIAL.iter().map(|(s, p)| Stock::new(s, *p)).collect();
        let history = stocks
            .iter()
            .map(|s| (s.symbol.clone(), VecDeque::from([s.price])))
            .collect();
        Market {
            state: MarketState::Open,
            stocks,
            history,
        }
    }

    /// One tick: moves some stocks and returns the moved ones.
    fn tick(&mut self) -> Vec<Stock> {
        let mut moved = Vec::new();
        for stock in &mut self.stocks {
            if rand::random::<f64>() >= MOVE_CHANCE {
                continue;
            }
            // Slightly more ups than downs, as in the tutorial.
            let up = rand::random::<f64>() > 0.49;
            let fraction = rand::random::<f64>() * RANGE_PERCENT;
            stock.apply(if up { fraction } else { -fraction });
            let points = self.history.entry(stock.symbol.clone()).or_default();
            points.push_back(stock.price);
            while points.len() > HISTORY_POINTS {
                points.pop_front();
            }
            moved.push(stock.clone());
        }
        moved
    }
}

/// The market, shared by the hub and the ticker task. One async lock orders state changes and
/// their broadcasts, so no price update is sent after `MarketClosed`.
#[derive(Debug, Clone)]
pub struct StockMarket {
    market: Arc<Mutex<Market>>,
    stats: Arc<Stats>,
    /// Whether the market runs on this server (false with `--no-market`).
    here: bool,
}

impl StockMarket {
    /// An open market with the demo's five stocks; with `here` false, a server without a market.
    pub fn new(stats: Arc<Stats>, here: bool) -> Self {
        StockMarket {
            market: Arc::new(Mutex::new(Market::new())),
            stats,
            here,
        }
    }

    fn must_be_here(&self) -> Result<(), HubError> {
        if self.here {
            Ok(())
        } else {
            Err(HubError::new(NO_MARKET_HERE))
        }
    }

    async fn stocks(&self) -> Vec<Stock> {
        if !self.here {
            return Vec::new();
        }
        self.market.lock().await.stocks.clone()
    }

    async fn history(&self) -> BTreeMap<String, Vec<f64>> {
        if !self.here {
            return BTreeMap::new();
        }
        self.market
            .lock()
            .await
            .history
            .iter()
            .map(|(symbol, points)| (symbol.clone(), points.iter().copied().collect()))
            .collect()
    }

    async fn state(&self) -> MarketState {
        if !self.here {
            return MarketState::Elsewhere;
        }
        self.market.lock().await.state
    }

    async fn broadcast(
        &self,
        context: &HubContext,
        method: &str,
        args: impl IntoArguments,
    ) -> Result<(), SendError> {
        context.clients().all().send(method, args).await?;
        self.stats.sent("stocks", context.connection_count());
        Ok(())
    }

    /// Moves prices every [`TICK`] while the market is open and broadcasts every move as
    /// `UpdateStockPrice(stock)` through `context`.
    pub async fn run_ticker(self, context: HubContext) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mut market = self.market.lock().await;
            if market.state != MarketState::Open {
                continue;
            }
            for stock in market.tick() {
                if let Err(err) = self.broadcast(&context, "UpdateStockPrice", (stock,)).await {
                    // One warning per tick: the rest of this tick's moves would fail alike.
                    tracing::warn!(%err, "price updates not sent");
                    break;
                }
            }
        }
    }

    async fn set_state(&self, context: &HubContext, open: bool) -> Result<(), HubError> {
        self.must_be_here()?;
        let (state, method) = if open {
            (MarketState::Open, "MarketOpened")
        } else {
            (MarketState::Closed, "MarketClosed")
        };
        let mut market = self.market.lock().await;
        if market.state == state {
            return Ok(());
        }
        market.state = state;
        tracing::info!(?state, "market state changed");
        self.broadcast(context, method, ()).await?;
        Ok(())
    }

    async fn reset(&self, context: &HubContext) -> Result<(), HubError> {
        self.must_be_here()?;
        let mut market = self.market.lock().await;
        if market.state == MarketState::Open {
            return Err(HubError::new(
                "Market must be closed before it can be reset.",
            ));
        }
        let state = market.state;
        *market = Market::new();
        market.state = state;
        let stocks = market.stocks.clone();
        self.broadcast(context, "MarketReset", (stocks,)).await?;
        Ok(())
    }
}

fn market(hub: &HubCallerContext) -> Result<StockMarket, HubError> {
    hub.state::<StockMarket>()
        .ok_or_else(|| HubError::new("The stock hub has no market."))
}

/// The stock ticker hub, on `backplane` when given. `context` is set once the hub is built: the
/// market's state changes are broadcast through it, like the ticker's price updates.
pub fn stock_hub(
    stock_market: StockMarket,
    context: StockContext,
    stats: Arc<Stats>,
    backplane: Option<&RedisBackplane>,
) -> Hub {
    crate::demo_hub("stocks", "StockTickerHub", &stats, backplane)
        .state(stock_market)
        .state(context)
        .method("GetAllStocks", |hub: HubCallerContext| async move {
            Ok::<_, HubError>(market(&hub)?.stocks().await)
        })
        .method("GetHistory", |hub: HubCallerContext| async move {
            Ok::<_, HubError>(market(&hub)?.history().await)
        })
        .method("GetMarketState", |hub: HubCallerContext| async move {
            Ok::<_, HubError>(market(&hub)?.state().await)
        })
        .method("OpenMarket", |hub: HubCallerContext| async move {
            let context = hub_context(&hub)?;
            market(&hub)?.set_state(&context, true).await
        })
        .method("CloseMarket", |hub: HubCallerContext| async move {
            let context = hub_context(&hub)?;
            market(&hub)?.set_state(&context, false).await
        })
        .method("Reset", |hub: HubCallerContext| async move {
            let context = hub_context(&hub)?;
            market(&hub)?.reset(&context).await
        })
        .build()
}

/// The stock hub's own context, from the [`StockContext`] state.
fn hub_context(hub: &HubCallerContext) -> Result<HubContext, HubError> {
    hub.state::<StockContext>()
        .and_then(|c| c.get())
        .ok_or_else(|| HubError::new("The stock hub is not running."))
}

/// The stock hub's own [`HubContext`], set after the hub is built (a hub's context exists only
/// then).
#[derive(Clone, Default)]
pub struct StockContext(Arc<std::sync::OnceLock<HubContext>>);

impl StockContext {
    /// Sets the context (once).
    pub fn set(&self, context: HubContext) {
        let _ = self.0.set(context);
    }

    /// The context, once set.
    pub fn get(&self) -> Option<HubContext> {
        self.0.get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_updates_the_day_range() {
        let mut stock = Stock::new("TEST", 100.0);
        stock.apply(0.003);
        assert_eq!(stock.price, 100.3);
        assert_eq!(stock.day_high, 100.3);
        stock.apply(-0.005);
        assert!((stock.price - 99.8).abs() < 1e-9);
        assert_eq!(stock.day_low, stock.price);
        assert!((stock.change + 0.2).abs() < 1e-9);
        assert!((stock.percent_change + 0.002).abs() < 1e-9);
        stock.apply(0.000_001);
        assert!((stock.last_change - 0.01).abs() < 1e-9, "at least a cent");
    }

    #[tokio::test]
    async fn a_server_without_the_market_answers_elsewhere() {
        let market = StockMarket::new(Arc::default(), false);
        assert!(market.stocks().await.is_empty());
        assert!(market.history().await.is_empty());
        assert_eq!(market.state().await, MarketState::Elsewhere);
        assert_eq!(
            market.must_be_here().err().map(|e| e.to_string()),
            Some(NO_MARKET_HERE.to_owned())
        );
        let here = StockMarket::new(Arc::default(), true);
        assert_eq!(here.stocks().await.len(), INITIAL.len());
        assert_eq!(here.state().await, MarketState::Open);
        assert!(here.must_be_here().is_ok());
    }

    #[test]
    fn ticks_move_prices_within_range_and_keep_history() {
        let mut market = Market::new();
        let mut moves = 0;
        for _ in 0..400 {
            for stock in market.tick() {
                moves += 1;
                assert!(stock.last_change.abs() <= stock.price * RANGE_PERCENT + 0.02);
            }
        }
        assert!(moves > 100, "stocks move ({moves})");
        assert!(
            market
                .history
                .values()
                .all(|h| h.len() <= HISTORY_POINTS && !h.is_empty())
        );
    }
}
