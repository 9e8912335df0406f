// The demo server with the official @microsoft/signalr client in Node (no browser): 200
// simultaneous connections chatting in 20 rooms, and the graceful shutdown on Ctrl-C.

import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

import { startServer } from "./lib/server.mjs";

const { HttpTransportType } = signalR;

/** Transport × protocol mixes; every room gets each of them twice. */
const KINDS = [
    [HttpTransportType.WebSockets, "json"],
    [HttpTransportType.WebSockets, "messagepack"],
    [HttpTransportType.ServerSentEvents, "json"],
    [HttpTransportType.LongPolling, "json"],
    [HttpTransportType.LongPolling, "messagepack"],
];

function connect(url, hub, transport, protocol, logger = signalR.LogLevel.None) {
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(`${url}${hub}`, { transport })
        .configureLogging(logger);
    if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
    return builder.build();
}

/** Resolves when `predicate()` holds, polling; rejects after `timeoutMs`. */
async function until(predicate, timeoutMs, describe) {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`timed out: ${describe()}`);
        await sleep(25);
    }
}

test("200 simultaneous connections chat in 20 rooms: no message lost or misdelivered", async (t) => {
    const ROOMS = 20;
    const CONNECTIONS = 200;
    const MESSAGES = 5;
    const perRoom = CONNECTIONS / ROOMS;
    const server = await startServer();
    t.after(() => server.stop());

    const clients = Array.from({ length: CONNECTIONS }, (_, i) => {
        const [transport, protocol] = KINDS[Math.floor(i / ROOMS) % KINDS.length];
        const client = {
            name: `user-${i}`,
            room: `room-${i % ROOMS}`,
            transport: HttpTransportType[transport],
            protocol,
            messages: [],
            joins: [],
            connection: connect(server.url, "/hubs/chat", transport, protocol),
        };
        client.connection.on("ReceiveMessage", (m) => client.messages.push(m));
        client.connection.on("UserJoined", (name, room) => client.joins.push({ name, room }));
        client.connection.on("UserLeft", (name, room) => client.joins.push({ left: name, room }));
        return client;
    });
    t.after(() => Promise.all(clients.map((c) => c.connection.stop())));

    // All at once.
    await Promise.all(clients.map((c) => c.connection.start()));
    const seen = await Promise.all(clients.map((c) => c.connection.invoke("Whoami")));
    seen.forEach((me, i) => {
        assert.equal(me.transport, clients[i].transport);
        assert.equal(me.protocol, clients[i].protocol);
    });
    assert.equal(new Set(seen.map((me) => me.connectionId)).size, CONNECTIONS);

    // Joins one after the other, so that the join notices have one exact count: the k-th member
    // of a room is announced to the k-1 before it.
    for (const c of clients) {
        const joined = await c.connection.invoke("Join", c.name, c.room);
        assert.equal(joined.room, c.room);
    }

    // Everybody talks at once.
    await Promise.all(clients.map(async (c) => {
        for (let k = 0; k < MESSAGES; k++) {
            await c.connection.invoke("SendToRoom", `${c.name}#${k}`);
        }
    }));
    const expected = perRoom * MESSAGES;
    await until(() => clients.every((c) => c.messages.length >= expected), 30_000, () =>
        `${clients.filter((c) => c.messages.length < expected).length} clients still waiting`);
    await sleep(500); // anything extra would show up now

    const byRoom = new Map();
    for (const c of clients) {
        const room = byRoom.get(c.room) ?? { members: [], messages: 0, joins: 0 };
        room.members.push(c);
        room.messages += c.messages.length;
        room.joins += c.joins.length;
        byRoom.set(c.room, room);
    }
    assert.equal(byRoom.size, ROOMS);
    for (const [name, room] of byRoom) {
        assert.equal(room.members.length, perRoom);
        assert.equal(room.messages, perRoom * expected, `${name}: every member got every message once`);
        assert.equal(room.joins, (perRoom * (perRoom - 1)) / 2, `${name}: join notices`);
        const sent = new Set(room.members.flatMap((m) =>
            Array.from({ length: MESSAGES }, (_, k) => `${m.name}#${k}`)));
        for (const c of room.members) {
            assert.equal(c.messages.length, expected, `${c.name} got ${c.messages.length}`);
            assert.ok(c.messages.every((m) => m.room === c.room), `${c.name}: misdelivered message`);
            const texts = new Set(c.messages.map((m) => m.text));
            assert.equal(texts.size, expected, `${c.name}: duplicates`);
            assert.deepEqual(texts, sent, `${c.name}: exactly its room's messages`);
            assert.ok(c.joins.every((j) => j.room === c.room && !j.left), `${c.name}: notices`);
            // Messages of one sender arrive in the order sent.
            for (const member of room.members) {
                const order = c.messages.filter((m) => m.from === member.name).map((m) => m.text);
                assert.deepEqual(order, Array.from({ length: MESSAGES }, (_, k) => `${member.name}#${k}`));
            }
        }
    }
});

test("Ctrl-C: every client gets a Close message that allows reconnecting, then the server exits", async (t) => {
    const server = await startServer();
    t.after(() => server.stop());
    const clients = KINDS.map(([transport, protocol]) => {
        const logs = [];
        const logger = { log: (level, message) => logs.push(`${new Date().toISOString()} ${message}`) };
        const connection = connect(server.url, "/hubs/chat", transport, protocol, logger);
        const closed = new Promise((resolve) => connection.onclose((err) => resolve(err ?? null)));
        return { connection, logs, closed, transport: HttpTransportType[transport] };
    });
    await Promise.all(clients.map((c) => c.connection.start()));
    await Promise.all(clients.map((c, i) => c.connection.invoke("Join", `c${i}`, "lobby")));
    const started = Date.now();
    const { code, signal } = await server.kill("SIGINT");
    assert.equal(code, 0, `exit code (signal ${signal})\n${server.output()}`);
    for (const c of clients) {
        const err = await c.closed;
        assert.equal(err, null, `${c.transport}: closed without error\n${c.logs.join("\n")}`);
        assert.ok(c.logs.some((line) => line.includes("Close message received from server")),
            `${c.transport}: got a Close message\n${c.logs.join("\n")}`);
    }
    assert.ok(Date.now() - started < 5000, "shutdown is quick");
    assert.match(server.output(), /shutting down: closing every connection/);
    assert.match(server.output(), /demo server stopped/);
});
