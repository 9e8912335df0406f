// The chat page: rooms are SignalR groups; private messages go to a name.
"use strict";

(function () {
  const { el, DemoConnection, time } = window.Demo;
  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const nameInput = $("name");
  const roomSelect = $("room");
  const messages = $("messages");
  const members = new Set();
  let joinedRoom = null;

  nameInput.value = query.get("name") || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
  const wantedRoom = query.get("room");
  if (wantedRoom) {
    if (![...roomSelect.options].some((o) => o.value === wantedRoom)) {
      roomSelect.append(el("option", { value: wantedRoom }, wantedRoom));
    }
    roomSelect.value = wantedRoom;
  }

  function add(className, ...parts) {
    const item = el("li", { class: className }, ...parts);
    messages.append(item);
    messages.scrollTop = messages.scrollHeight;
    return item;
  }
  function system(text) {
    add("system", el("span", { class: "time" }, time(Date.now())), text);
  }
  function renderMembers() {
    $("members").replaceChildren(...[...members].sort().map((n) => el("li", {}, n)));
  }
  function setJoined(room) {
    joinedRoom = room;
    $("joined").textContent = room ?? "(none)";
    document.body.dataset.room = room ?? "";
  }

  const demo = new DemoConnection({
    hub: "/hubs/chat",
    classicHub: "chatHub",
    autoConnect: false,
    register(connection) {
      connection.on("ReceiveMessage", (m) => {
        add("msg", el("span", { class: "time" }, time(m.at)), el("span", { class: "who" }, `${m.from}:`), " ", m.text);
      });
      connection.on("ReceivePrivate", (m) => {
        add("msg private", el("span", { class: "time" }, time(m.at)),
          el("span", { class: "who" }, `${m.from} → you (private):`), " ", m.text);
      });
      connection.on("UserJoined", (name, room) => {
        members.add(name);
        renderMembers();
        system(`${name} joined #${room}`);
      });
      connection.on("UserLeft", (name, room) => {
        members.delete(name);
        renderMembers();
        system(`${name} left #${room}`);
      });
    },
    async onConnected(connection, how) {
      await join(how === "reconnected" ? "rejoined" : "joined");
    },
    onReconnecting() {
      setJoined(null);
      system("connection lost: reconnecting…");
    },
    onClosed() {
      setJoined(null);
      members.clear();
      renderMembers();
    },
  });

  async function join(verb = "joined") {
    const room = roomSelect.value;
    const name = nameInput.value.trim();
    $("chat-error").textContent = "";
    try {
      const result = await demo.invoke("Join", name, room);
      members.clear();
      for (const n of result.members) members.add(n);
      renderMembers();
      setJoined(result.room);
      system(`you ${verb} #${result.room} as ${name}`);
    } catch (err) {
      setJoined(null);
    }
  }

  $("join").addEventListener("click", () => join());
  roomSelect.addEventListener("change", () => { if (demo.state === "connected") join(); });

  $("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("message");
    const text = input.value.trim();
    const to = $("to").value.trim();
    if (!text) return;
    $("chat-error").textContent = "";
    try {
      if (to) {
        await demo.invoke("SendPrivate", to, text);
        add("msg private", el("span", { class: "time" }, time(Date.now())),
          el("span", { class: "who" }, `you → ${to} (private):`), " ", text);
      } else {
        await demo.invoke("SendToRoom", text);
      }
      input.value = "";
      input.focus();
    } catch (err) {
      $("chat-error").textContent = demo.errorLine.textContent;
    }
  });
})();
