// The move-shape page: drag the shape here and it moves in every other window.
"use strict";

(function () {
  const { DemoConnection } = window.Demo;
  const $ = (id) => document.getElementById(id);
  const area = $("area");
  const shape = $("shape");
  const SEND_EVERY_MS = 20;
  let sent = 0;
  let received = 0;
  let drag = null;
  let lastSend = 0;
  let trailing = null;

  function place(model) {
    shape.style.left = `${model.left}px`;
    shape.style.top = `${model.top}px`;
    $("position").textContent = `${Math.round(model.left)}, ${Math.round(model.top)}`;
    shape.dataset.left = String(Math.round(model.left));
    shape.dataset.top = String(Math.round(model.top));
  }

  const demo = new DemoConnection({
    hub: "/hubs/shape",
    classicHub: "moveShapeHub",
    autoConnect: true,
    register(connection) {
      connection.on("UpdateShape", (model) => {
        received += 1;
        $("received").textContent = String(received);
        if (!drag) place(model);
      });
    },
    async onConnected(connection) {
      place(await connection.invoke("GetShape"));
    },
  });

  function send(model) {
    if (demo.state !== "connected") return;
    sent += 1;
    $("sent").textContent = String(sent);
    demo.connection.send("UpdateModel", model).catch(() => {});
  }

  // The client throttles too (as the ASP.NET sample does), and always sends the final position.
  function moved(model, final) {
    place(model);
    clearTimeout(trailing);
    const now = performance.now();
    if (final || now - lastSend >= SEND_EVERY_MS) {
      lastSend = now;
      send(model);
    } else {
      trailing = setTimeout(() => { lastSend = performance.now(); send(model); }, SEND_EVERY_MS);
    }
  }

  function modelAt(event) {
    const box = area.getBoundingClientRect();
    const clamp = (v, max) => Math.max(0, Math.min(max, v));
    return {
      left: clamp(event.clientX - box.left - area.clientLeft - drag.dx, area.clientWidth - shape.offsetWidth),
      top: clamp(event.clientY - box.top - area.clientTop - drag.dy, area.clientHeight - shape.offsetHeight),
    };
  }

  shape.addEventListener("pointerdown", (event) => {
    const box = shape.getBoundingClientRect();
    drag = { dx: event.clientX - box.left, dy: event.clientY - box.top };
    shape.setPointerCapture(event.pointerId);
    shape.classList.add("dragging");
  });
  shape.addEventListener("pointermove", (event) => {
    if (drag) moved(modelAt(event), false);
  });
  const end = (event) => {
    if (!drag) return;
    moved(modelAt(event), true);
    drag = null;
    shape.classList.remove("dragging");
  };
  shape.addEventListener("pointerup", end);
  shape.addEventListener("pointercancel", end);
})();
