// Shared by the demo pages: the navigation bar, the connection bar (client, transport and
// protocol choice, state, what the server says the connection is) and a connection built from it:
// a HubConnection of the official @microsoft/signalr browser client, or a classic SignalR 2.x
// connection of jquery.signalR through the server's generated proxy (/signalr/hubs). The server
// serves both clients from node_modules under /lib/.
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

  /** "SendToRoom" → "sendToRoom": how the generated proxy names methods. */
  function camel(name) {
    return name.charAt(0).toLowerCase() + name.slice(1);
  }

  /** Turns what jquery.signalR rejects with into an Error. */
  function asError(failure) {
    if (failure instanceof Error) return failure;
    return new Error(failure && failure.message !== undefined ? String(failure.message) : String(failure));
  }

  /** The classic connection in use on this page (the generated proxy has one: $.connection.hub). */
  let currentClassic = null;
  let classicEventsBound = false;

  /**
   * A classic SignalR 2.x connection (jquery.signalR 2.4 and the generated proxy of
   * /signalr/hubs) behind the part of HubConnection the pages use: on, invoke, send, start, stop,
   * onreconnecting, onreconnected, onclose.
   *
   * Reconnecting: jquery.signalR resumes a dropped connection by itself (same connection id,
   * groups kept, missed messages replayed) while the server still knows it. When it gives up
   * (the server was restarted, or the connection was gone longer than the server's disconnect
   * timeout) it reports "disconnected"; this then starts a new connection with the same retry
   * delays as the Core client's automatic reconnect, and reports "reconnected" once it is up, so
   * the page rejoins as it does for a Core client.
   */
  class ClassicConnection {
    constructor(hubName, transport) {
      if (!window.jQuery || !jQuery.connection || !jQuery.connection[hubName]) {
        throw new Error(`the classic client is not loaded (jquery, jquery.signalR, /signalr/hubs: ${hubName})`);
      }
      this.hub = jQuery.connection.hub;
      this.proxy = jQuery.connection[hubName];
      this.transport = transport === "auto" ? "auto" : camel(transport);
      this.callbacks = { reconnecting: [], reconnected: [], close: [] };
      this.stopped = false;
      this.everConnected = false;
      this.retry = null; // { since, count, timer } while starting a new connection
      this.lastError = null;
      ClassicConnection.bindEvents(this.hub);
    }

    /** The page-wide events of $.connection.hub, bound once, passed to the connection in use. */
    static bindEvents(hub) {
      if (classicEventsBound) return;
      classicEventsBound = true;
      hub.error((err) => { if (currentClassic) currentClassic.lastError = asError(err); });
      hub.reconnecting(() => currentClassic?.lost(currentClassic.lastError));
      hub.reconnected(() => currentClassic?.back());
      hub.disconnected(() => currentClassic?.disconnected());
    }

    emit(what, ...args) {
      for (const callback of this.callbacks[what]) callback(...args);
    }
    onreconnecting(callback) { this.callbacks.reconnecting.push(callback); }
    onreconnected(callback) { this.callbacks.reconnected.push(callback); }
    onclose(callback) { this.callbacks.close.push(callback); }

    /** Handles server → client calls of `method` (the generated proxy's `client.<method>`). */
    on(method, handler) {
      this.proxy.client[camel(method)] = (...args) => {
        if (currentClassic === this) handler(...args);
      };
    }

    /** Calls hub method `method` through the generated proxy (`server.<method>`). */
    invoke(method, ...args) {
      const call = this.proxy.server[camel(method)];
      if (typeof call !== "function") {
        return Promise.reject(new Error(`the hub has no method '${method}'`));
      }
      return new Promise((resolve, reject) => {
        call(...args).done(resolve).fail((err) => reject(asError(err)));
      });
    }

    /**
     * Calls a hub method without wanting its result. Classic SignalR has no fire-and-forget
     * call: this resolves when the server has answered.
     */
    send(method, ...args) {
      return this.invoke(method, ...args).then(() => undefined);
    }

    /** Starts the connection (negotiate, connect, start); resolves once it is connected. */
    start() {
      currentClassic = this;
      this.stopped = false;
      return new Promise((resolve, reject) => {
        this.hub.start({ transport: this.transport })
          .done(() => {
            this.everConnected = true;
            resolve();
          })
          .fail((err) => reject(asError(err)));
      });
    }

    async stop() {
      this.stopped = true;
      if (this.retry) clearTimeout(this.retry.timer);
      this.retry = null;
      this.hub.stop();
    }

    /** jquery.signalR lost the transport and is reconnecting. */
    lost(err) {
      if (!this.retry) this.emit("reconnecting", err || undefined);
    }

    /** jquery.signalR resumed the connection. */
    back() {
      this.lastError = null;
      this.emit("reconnected");
    }

    /** jquery.signalR stopped: after stop(), a failed start or when its own reconnect gave up. */
    disconnected() {
      if (this.stopped || !this.everConnected) {
        if (this.stopped) this.emit("close");
        return;
      }
      if (!this.retry) {
        this.retry = { since: Date.now(), count: 0, timer: null };
        this.emit("reconnecting", this.lastError || undefined);
      }
      if (this.retry.timer !== null) return;
      const delay = retryPolicy.nextRetryDelayInMilliseconds({
        previousRetryCount: this.retry.count,
        elapsedMilliseconds: Date.now() - this.retry.since,
      });
      if (delay === null) {
        this.retry = null;
        this.stopped = true;
        this.emit("close", new Error("could not reconnect"));
        return;
      }
      this.retry.timer = setTimeout(() => this.restart(), delay);
    }

    restart() {
      if (!this.retry || this.stopped) return;
      this.retry.timer = null;
      this.retry.count += 1;
      // A failed start ends in "disconnected" again, which schedules the next try.
      this.hub.start({ transport: this.transport }).done(() => {
        if (this.stopped) return;
        this.retry = null;
        this.lastError = null;
        this.emit("reconnected");
      });
    }
  }

  const CLIENTS = { core: "Core (@microsoft/signalr)", classic: "classic (jQuery)" };

  /**
   * A connection driven by the page's connection bar: the official client's HubConnection, or
   * (client "classic") a ClassicConnection.
   *
   * options: hub (path of the Core endpoint), classicHub (the hub's name in the generated
   * proxy, e.g. "chatHub"; offers the classic client), register(connection) (adds handlers),
   * onConnected(connection, how) (how: "connected" | "reconnected"; loads state, rejoins),
   * autoConnect.
   */
  class DemoConnection {
    constructor(options) {
      this.options = options;
      this.connection = null;
      this.bar = document.getElementById("connection-bar");
      this.render();
      const query = new URLSearchParams(location.search);
      if (query.get("client") && CLIENTS[query.get("client")]) this.clientSelect.value = query.get("client");
      if (query.get("transport")) this.transportSelect.value = query.get("transport");
      if (query.get("protocol")) this.protocolSelect.value = query.get("protocol");
      this.syncProtocol();
      this.setState("disconnected");
      const auto = query.get("autoconnect");
      if (auto === "1" || (auto !== "0" && options.autoConnect)) this.connect();
    }

    render() {
      const classic = Boolean(this.options.classicHub);
      this.clientSelect = el("select", { id: "client" },
        ...Object.entries(CLIENTS).filter(([value]) => classic || value === "core")
          .map(([value, label]) => el("option", { value }, label)));
      this.clientSelect.addEventListener("change", () => this.syncProtocol());
      this.transportSelect = el("select", { id: "transport" },
        el("option", { value: "auto" }, "Auto (negotiate)"),
        el("option", { value: "WebSockets" }, "WebSockets"),
        el("option", { value: "ServerSentEvents" }, "Server-Sent Events"),
        el("option", { value: "LongPolling" }, "Long polling"));
      this.protocolSelect = el("select", { id: "protocol" },
        el("option", { value: "json" }, "JSON"),
        el("option", { value: "messagepack" }, "MessagePack"),
        el("option", { value: "classic", hidden: "" }, "SignalR 2.x JSON"));
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
          el("label", {}, "Client ", this.clientSelect),
          el("label", {}, "Transport ", this.transportSelect),
          el("label", {}, "Protocol ", this.protocolSelect),
          this.connectButton, this.disconnectButton, this.stateBadge, this.info),
        this.errorLine);
    }

    /** Classic clients have one protocol (SignalR 2.x JSON); Core clients choose. */
    syncProtocol() {
      const classic = this.clientSelect.value === "classic";
      if (classic) {
        if (this.protocolSelect.value !== "classic") this.coreProtocol = this.protocolSelect.value;
        this.protocolSelect.value = "classic";
      } else if (this.protocolSelect.value === "classic") {
        this.protocolSelect.value = this.coreProtocol ?? "json";
      }
      this.protocolSelect.disabled = classic || this.state !== "disconnected";
      document.body.dataset.client = this.clientSelect.value;
    }

    setState(state) {
      this.state = state;
      this.stateBadge.textContent = state;
      this.stateBadge.className = `state state-${state}`;
      document.body.dataset.state = state;
      const busy = state !== "disconnected";
      this.connectButton.disabled = busy;
      this.disconnectButton.disabled = !busy;
      this.clientSelect.disabled = busy;
      this.transportSelect.disabled = busy;
      this.syncProtocol();
      if (state !== "connected") this.info.textContent = "";
    }

    error(message) {
      this.errorLine.textContent = message || "";
    }

    build() {
      const transport = this.transportSelect.value;
      const connection = this.clientSelect.value === "classic"
        ? new ClassicConnection(this.options.classicHub, transport)
        : this.buildCore(transport);
      this.wire(connection);
      this.options.register(connection);
      return connection;
    }

    buildCore(transport) {
      const httpOptions = {};
      if (transport !== "auto") httpOptions.transport = signalR.HttpTransportType[transport];
      let builder = new signalR.HubConnectionBuilder()
        .withUrl(this.options.hub, httpOptions)
        .withAutomaticReconnect(retryPolicy)
        .configureLogging(signalR.LogLevel.Warning);
      if (this.protocolSelect.value === "messagepack") {
        builder = builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
      }
      return builder.build();
    }

    wire(connection) {
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
    }

    async afterConnect(how) {
      const connection = this.connection;
      try {
        const me = await connection.invoke("Whoami");
        this.me = me;
        this.info.textContent = `${me.transport} · ${me.protocol} · ${me.connectionId}`;
        this.info.dataset.transport = me.transport;
        this.info.dataset.protocol = me.protocol;
        this.info.dataset.client = this.clientSelect.value;
        await this.options.onConnected?.(connection, how);
      } catch (err) {
        this.error(err.message);
      }
    }

    async connect() {
      if (this.connection) await this.disconnect();
      this.error("");
      if (this.clientSelect.value === "core" && this.transportSelect.value === "ServerSentEvents"
          && this.protocolSelect.value === "messagepack") {
        this.error("Server-Sent Events carry text only: MessagePack needs WebSockets or long polling.");
        return;
      }
      let connection;
      try {
        connection = this.build();
      } catch (err) {
        this.error(err.message);
        return;
      }
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
