// The status page: what the server pushes every second, as cards, tables and a canvas chart.
"use strict";

(function () {
  const { el, DemoConnection, lineChart, legend } = window.Demo;
  const $ = (id) => document.getElementById(id);
  const TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"];
  /** A server not heard from for this long leaves the servers table. */
  const SERVER_TIMEOUT_MS = 5000;
  let last = null;
  /** This page's server (its snapshots fill the page); on a backplane the others' arrive too. */
  let me = null;
  /** The latest snapshot of every server heard from, by server id. */
  const servers = new Map();

  function cell(value, cls = "num") {
    return el("td", { class: cls }, value);
  }

  /** A snapshot from any server: this page's server fills the page, every one its row. */
  function received(stats) {
    servers.set(stats.server.id, { stats, at: Date.now() });
    for (const [id, seen] of servers) {
      if (Date.now() - seen.at > SERVER_TIMEOUT_MS && id !== me) servers.delete(id);
    }
    renderServers();
    if (stats.server.id === me) show(stats);
  }

  function renderServers() {
    const rows = [...servers.values()].map((s) => s.stats)
      .sort((a, b) => a.server.url.localeCompare(b.server.url));
    $("servers").tBodies[0].replaceChildren(...rows.map((s) => {
      const latest = s.history[s.history.length - 1] ?? { messagesIn: 0, messagesOut: 0 };
      return el("tr", { "data-server": s.server.url },
        el("td", {}, s.server.id === me ? `${s.server.url} (this one)` : s.server.url),
        cell(s.connections), cell(latest.messagesIn), cell(latest.messagesOut),
        el("td", {}, s.server.market ? "runs here" : "elsewhere"));
    }));
  }

  function renderBackplane(backplane) {
    $("backplane-redis").textContent = backplane.redis
      ? `Redis at ${backplane.redis}${backplane.prefix ? `, channel prefix "${backplane.prefix}"` : ""}`
      : "none: every hub is in memory (one server)";
    $("backplane").tBodies[0].replaceChildren(...backplane.hubs.map((h) =>
      el("tr", { "data-hub": h.hub }, el("td", {}, h.hub),
        el("td", {}, h.backplaneName ?? "in memory"),
        el("td", { class: "mono" }, h.serverName ?? "–"),
        el("td", { class: h.backplaneName ? (h.subscribed ? "up" : "down") : "" },
          h.backplaneName ? (h.subscribed ? "yes" : "no") : "–"))));
  }

  function show(stats) {
    last = stats;
    renderBackplane(stats.backplane);
    const latest = stats.history[stats.history.length - 1] ?? { messagesIn: 0, messagesOut: 0 };
    $("connections").textContent = String(stats.connections);
    $("groups").textContent = String(stats.groups);
    $("in-rate").textContent = String(latest.messagesIn);
    $("out-rate").textContent = String(latest.messagesOut);
    $("uptime").textContent = `${stats.uptimeSeconds} s`;

    const count = (transport, protocol) => stats.byKind
      .filter((k) => k.transport === transport && (!protocol || k.protocol === protocol))
      .reduce((sum, k) => sum + k.count, 0);
    $("by-transport").tBodies[0].replaceChildren(...TRANSPORTS.map((t) =>
      el("tr", { "data-transport": t }, el("td", {}, t),
        cell(count(t, "json")), cell(count(t, "messagepack")), cell(count(t, "classic")),
        // The total: the server's signalr.server.active_connections (plus classic connections).
        cell(stats.byTransport[t] ?? 0))));
    $("by-kind").tBodies[0].replaceChildren(...stats.byKind.map((k) =>
      el("tr", { "data-key": `${k.hub}/${k.transport}/${k.protocol}` },
        el("td", {}, k.hub), el("td", {}, k.transport), el("td", {}, k.protocol), cell(k.count))));
    $("rooms").tBodies[0].replaceChildren(...(stats.rooms.length ? stats.rooms.map((r) =>
      el("tr", { "data-room": r.room }, el("td", {}, `#${r.room}`), cell(r.members), el("td", {}, r.names.join(", "))))
      : [el("tr", {}, el("td", { colspan: 3, class: "info" }, "no rooms yet: open the chat"))]));
    draw();
  }

  function draw() {
    if (!last) return;
    const series = [
      { label: "messages in / s", color: "#1f6feb", points: last.history.map((s) => s.messagesIn) },
      { label: "messages out / s", color: "#b7410e", points: last.history.map((s) => s.messagesOut) },
      { label: "connections", color: "#1a7f37", points: last.history.map((s) => s.connections) },
    ];
    // The window grows to two minutes, so a fresh server does not draw a sliver at the right.
    const slots = Math.min(120, Math.max(30, last.history.length));
    lineChart($("chart"), series, { slots, min: 0, xLabel: `last ${slots} s →` });
    legend($("legend"), series);
  }

  new DemoConnection({
    hub: "/hubs/status",
    classicHub: "statusHub",
    autoConnect: true,
    register(connection) {
      connection.on("Stats", received);
    },
    async onConnected(connection) {
      const stats = await connection.invoke("GetStats");
      me = stats.server.id;
      received(stats);
    },
  });
  window.addEventListener("resize", draw);
})();
