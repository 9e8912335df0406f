// The stock ticker page: a live table and a canvas chart of the prices the server broadcasts.
"use strict";

(function () {
  const { el, DemoConnection, lineChart, legend } = window.Demo;
  const $ = (id) => document.getElementById(id);
  const COLORS = ["#b7410e", "#1f6feb", "#1a7f37", "#8250df", "#bf8700", "#d1242f"];
  const POINTS = 200;
  const rows = new Map();
  const history = new Map();
  const dayOpen = new Map();
  let updates = 0;
  let drawPending = false;
  // Whether the market runs on another server of the backplane (this one started with
  // --no-market): its prices and events arrive all the same, but it is opened, closed and reset
  // there.
  let elsewhere = false;

  const money = (n) => n.toFixed(2);
  const signed = (n, digits = 2) => `${n > 0 ? "▲ " : n < 0 ? "▼ " : ""}${Math.abs(n).toFixed(digits)}`;

  function render(stock, flash) {
    let row = rows.get(stock.symbol);
    if (!row) {
      row = el("tr", { "data-symbol": stock.symbol });
      rows.set(stock.symbol, row);
      $("stocks").tBodies[0].append(row);
    }
    const direction = stock.change > 0 ? "up" : stock.change < 0 ? "down" : "";
    row.replaceChildren(
      el("td", {}, el("strong", {}, stock.symbol)),
      el("td", { class: "num price" }, money(stock.price)),
      el("td", { class: "num" }, money(stock.dayOpen)),
      el("td", { class: "num" }, money(stock.dayLow)),
      el("td", { class: "num" }, money(stock.dayHigh)),
      el("td", { class: `num ${direction}` }, signed(stock.change)),
      el("td", { class: `num ${direction}` }, signed(stock.percentChange * 100)));
    dayOpen.set(stock.symbol, stock.dayOpen);
    if (flash) {
      row.classList.remove("flash");
      void row.offsetWidth; // restart the animation
      row.classList.add("flash");
    }
  }

  function record(symbol, price) {
    const points = history.get(symbol) ?? [];
    points.push(price);
    if (points.length > POINTS) points.splice(0, points.length - POINTS);
    history.set(symbol, points);
  }

  function draw() {
    drawPending = false;
    const series = [...history.keys()].sort().map((symbol, i) => ({
      label: symbol,
      color: COLORS[i % COLORS.length],
      points: history.get(symbol).map((p) => ((p - dayOpen.get(symbol)) / dayOpen.get(symbol)) * 100),
    }));
    const longest = Math.max(0, ...series.map((s) => s.points.length));
    lineChart($("chart"), series, {
      slots: Math.min(POINTS, Math.max(60, longest)),
      format: (n) => `${n.toFixed(2)}%`,
      xLabel: "price changes of each stock →",
    });
    legend($("legend"), series);
  }
  function scheduleDraw() {
    if (!drawPending) { drawPending = true; requestAnimationFrame(draw); }
  }

  /** "Open", "Closed", or null: not known yet (the market is on another server). */
  function setMarket(state) {
    const open = state === "Open";
    const badge = $("market-state");
    badge.textContent = state === null ? "on another server" : open ? "open" : "closed";
    badge.className = `state ${state === null ? "" : open ? "state-connected" : "state-disconnected"}`;
    document.body.dataset.market = state === null ? "elsewhere" : badge.textContent;
    $("open").disabled = elsewhere || open;
    $("close").disabled = elsewhere || !open;
    $("reset").disabled = elsewhere || open;
    $("market-note").hidden = !elsewhere;
  }

  const demo = new DemoConnection({
    hub: "/hubs/stocks",
    classicHub: "stockTickerHub",
    autoConnect: true,
    register(connection) {
      connection.on("UpdateStockPrice", (stock) => {
        updates += 1;
        $("updates").textContent = String(updates);
        render(stock, true);
        record(stock.symbol, stock.price);
        scheduleDraw();
        // Prices only move while the market is open.
        if (elsewhere && document.body.dataset.market === "elsewhere") setMarket("Open");
      });
      connection.on("MarketOpened", () => setMarket("Open"));
      connection.on("MarketClosed", () => setMarket("Closed"));
      connection.on("MarketReset", (stocks) => {
        history.clear();
        for (const stock of stocks) { render(stock, true); record(stock.symbol, stock.price); }
        scheduleDraw();
      });
    },
    async onConnected(connection) {
      const [stocks, past, state] = await Promise.all([
        connection.invoke("GetAllStocks"),
        connection.invoke("GetHistory"),
        connection.invoke("GetMarketState"),
      ]);
      for (const stock of stocks) render(stock, false);
      history.clear();
      for (const [symbol, points] of Object.entries(past)) history.set(symbol, points.slice(-POINTS));
      elsewhere = state === "Elsewhere";
      setMarket(elsewhere ? null : state);
      scheduleDraw();
    },
  });

  $("open").addEventListener("click", () => demo.invoke("OpenMarket").catch(() => {}));
  $("close").addEventListener("click", () => demo.invoke("CloseMarket").catch(() => {}));
  $("reset").addEventListener("click", () => demo.invoke("Reset").catch(() => {}));
  window.addEventListener("resize", scheduleDraw);
})();
