// The status page: what the server pushes every second, as cards, tables and a canvas chart.
"use strict";

(function () {
  const { el, DemoConnection, lineChart, legend } = window.Demo;
  const $ = (id) => document.getElementById(id);
  const TRANSPORTS = ["WebSockets", "ServerSentEvents", "LongPolling"];
  let last = null;

  function cell(value, cls = "num") {
    return el("td", { class: cls }, value);
  }

  function show(stats) {
    last = stats;
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
        cell(count(t)))));
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
      connection.on("Stats", show);
    },
    async onConnected(connection) {
      show(await connection.invoke("GetStats"));
    },
  });
  window.addEventListener("resize", draw);
})();
