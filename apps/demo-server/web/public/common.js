// Shared by the demo pages: the navigation bar, the connection bar (transport and protocol
// choice, state, what the server says the connection is) and a HubConnection built from it with
// the official @microsoft/signalr browser client (loaded from /lib/, which the server serves
// from node_modules).
"use strict";

(function () {
  const PAGES = [
    ["/chat", "Chat"],
    ["/stocks", "Stock ticker"],
    ["/shape", "Move shape"],
    ["/status", "Status"],
  ];

  /** Creates an element: el("li", { class: "x" }, "text", child). */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function header() {
    const nav = el("nav");
    for (const [href, title] of PAGES) {
      nav.append(el("a", { href, class: location.pathname === href ? "current" : null }, title));
    }
    const brand = el("a", { href: "/", class: "brand", style: "color:#fff;text-decoration:none" }, "SignalR ");
    brand.append(el("span", {}, "for Rust"));
    document.body.prepend(el("header", { class: "top" }, brand, nav));
  }

  /** Retry delays of the automatic reconnect: quick first tries, then every 2 s for 2 minutes. */
  const retryPolicy = {
    nextRetryDelayInMilliseconds(context) {
      if (context.elapsedMilliseconds > 120000) return null;
      return [0, 500, 1000][context.previousRetryCount] ?? 2000;
    },
  };

  /**
   * A HubConnection driven by the page's connection bar.
   *
   * options: hub (path), register(connection) (adds handlers), onConnected(connection, how)
   * (how: "connected" | "reconnected"; loads state, rejoins), autoConnect.
   */
  class DemoConnection {
    constructor(options) {
      this.options = options;
      this.connection = null;
      this.bar = document.getElementById("connection-bar");
      this.render();
      const query = new URLSearchParams(location.search);
      if (query.get("transport")) this.transportSelect.value = query.get("transport");
      if (query.get("protocol")) this.protocolSelect.value = query.get("protocol");
      this.setState("disconnected");
      const auto = query.get("autoconnect");
      if (auto === "1" || (auto !== "0" && options.autoConnect)) this.connect();
    }

    render() {
      this.transportSelect = el("select", { id: "transport" },
        el("option", { value: "auto" }, "Auto (negotiate)"),
        el("option", { value: "WebSockets" }, "WebSockets"),
        el("option", { value: "ServerSentEvents" }, "Server-Sent Events"),
        el("option", { value: "LongPolling" }, "Long polling"));
      this.protocolSelect = el("select", { id: "protocol" },
        el("option", { value: "json" }, "JSON"),
        el("option", { value: "messagepack" }, "MessagePack"));
      this.connectButton = el("button", { id: "connect", class: "primary" }, "Connect");
      this.disconnectButton = el("button", { id: "disconnect" }, "Disconnect");
      this.stateBadge = el("span", { id: "state", class: "state" });
      this.info = el("span", { id: "transport-info", class: "info" });
      this.errorLine = el("div", { id: "connection-error", class: "error" });
      this.connectButton.addEventListener("click", () => this.connect());
      this.disconnectButton.addEventListener("click", () => this.disconnect());
      this.bar.classList.add("panel");
      this.bar.append(
        el("div", { class: "row" },
          el("label", {}, "Transport ", this.transportSelect),
          el("label", {}, "Protocol ", this.protocolSelect),
          this.connectButton, this.disconnectButton, this.stateBadge, this.info),
        this.errorLine);
    }

    setState(state) {
      this.state = state;
      this.stateBadge.textContent = state;
      this.stateBadge.className = `state state-${state}`;
      document.body.dataset.state = state;
      const busy = state !== "disconnected";
      this.connectButton.disabled = busy;
      this.disconnectButton.disabled = !busy;
      this.transportSelect.disabled = busy;
      this.protocolSelect.disabled = busy;
      if (state !== "connected") this.info.textContent = "";
    }

    error(message) {
      this.errorLine.textContent = message || "";
    }

    build() {
      const transport = this.transportSelect.value;
      const httpOptions = {};
      if (transport !== "auto") httpOptions.transport = signalR.HttpTransportType[transport];
      let builder = new signalR.HubConnectionBuilder()
        .withUrl(this.options.hub, httpOptions)
        .withAutomaticReconnect(retryPolicy)
        .configureLogging(signalR.LogLevel.Warning);
      if (this.protocolSelect.value === "messagepack") {
        builder = builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
      }
      const connection = builder.build();
      connection.onreconnecting((err) => {
        this.setState("reconnecting");
        this.error(err ? `connection lost: ${err.message}` : "connection lost");
        this.options.onReconnecting?.(err);
      });
      connection.onreconnected(async () => {
        this.setState("connected");
        this.error("");
        await this.afterConnect("reconnected");
      });
      connection.onclose((err) => {
        if (this.connection !== connection) return;
        this.setState("disconnected");
        if (err) this.error(`closed: ${err.message}`);
        this.options.onClosed?.(err);
      });
      this.options.register(connection);
      return connection;
    }

    async afterConnect(how) {
      const connection = this.connection;
      try {
        const me = await connection.invoke("Whoami");
        this.me = me;
        this.info.textContent = `${me.transport} · ${me.protocol} · ${me.connectionId}`;
        this.info.dataset.transport = me.transport;
        this.info.dataset.protocol = me.protocol;
        await this.options.onConnected?.(connection, how);
      } catch (err) {
        this.error(err.message);
      }
    }

    async connect() {
      if (this.connection) await this.disconnect();
      this.error("");
      if (this.transportSelect.value === "ServerSentEvents" && this.protocolSelect.value === "messagepack") {
        this.error("Server-Sent Events carry text only: MessagePack needs WebSockets or long polling.");
        return;
      }
      const connection = this.build();
      this.connection = connection;
      this.setState("connecting");
      try {
        await connection.start();
      } catch (err) {
        if (this.connection === connection) {
          this.connection = null;
          this.setState("disconnected");
          this.error(`could not connect: ${err.message}`);
        }
        return;
      }
      this.setState("connected");
      await this.afterConnect("connected");
    }

    async disconnect() {
      const connection = this.connection;
      this.connection = null;
      if (connection) {
        try { await connection.stop(); } catch { /* already stopped */ }
      }
      this.setState("disconnected");
      this.options.onClosed?.();
    }

    /** Invokes a hub method; shows its error in the connection bar and rethrows. */
    async invoke(method, ...args) {
      if (!this.connection || this.state !== "connected") {
        const err = new Error("not connected");
        this.error(err.message);
        throw err;
      }
      try {
        return await this.connection.invoke(method, ...args);
      } catch (err) {
        this.error(err.message.replace(/^An unexpected error occurred invoking '\w+' on the server\. HubException: /, ""));
        throw err;
      }
    }
  }

  function time(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  /** Sets up a canvas for sharp drawing at its CSS size; returns its 2D context and size. */
  function canvas2d(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    return { ctx, width, height };
  }

  /**
   * Draws line series on a canvas: series = [{ label, color, points: [number] }], all on one
   * y-axis from min to max (computed when not given), x spread over `slots` points.
   */
  function lineChart(canvas, series, options = {}) {
    const { ctx, width, height } = canvas2d(canvas);
    const pad = { left: 52, right: 12, top: 10, bottom: 22 };
    const values = series.flatMap((s) => s.points).filter(Number.isFinite);
    let min = options.min ?? Math.min(...values);
    let max = options.max ?? Math.max(...values);
    if (!values.length) { min = 0; max = 1; }
    if (max - min < 1e-9) { max += 1; if (options.min === undefined) min -= 1; }
    const slots = Math.max(2, options.slots ?? Math.max(...series.map((s) => s.points.length), 2));
    const x = (i) => pad.left + (i / (slots - 1)) * (width - pad.left - pad.right);
    const y = (v) => pad.top + (1 - (v - min) / (max - min)) * (height - pad.top - pad.bottom);
    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = min + ((max - min) * i) / 4;
      ctx.strokeStyle = "#e6e9ef";
      ctx.beginPath(); ctx.moveTo(pad.left, y(v)); ctx.lineTo(width - pad.right, y(v)); ctx.stroke();
      ctx.fillStyle = "#667085";
      ctx.fillText((options.format ?? ((n) => n.toFixed(0)))(v), 4, y(v) + 4);
    }
    if (options.xLabel) ctx.fillText(options.xLabel, pad.left, height - 6);
    for (const s of series) {
      const offset = slots - s.points.length;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      s.points.forEach((v, i) => {
        if (i === 0) ctx.moveTo(x(i + offset), y(v)); else ctx.lineTo(x(i + offset), y(v));
      });
      ctx.stroke();
    }
  }

  function legend(container, series) {
    container.replaceChildren(...series.map((s) =>
      el("span", {}, el("i", { style: `background:${s.color}` }), s.label)));
  }

  header();
  window.Demo = { el, DemoConnection, time, lineChart, legend };
})();
