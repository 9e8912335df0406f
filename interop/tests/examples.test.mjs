// Smoke test of the server crate's examples: each is started as built (lib/examples.mjs) and
// driven with the official @microsoft/signalr client in Node, over WebSockets.

import assert from "node:assert/strict";
import { test } from "node:test";

import { signalR, clientLogLevel, withTimeout } from "../lib/client.mjs";
import { startExample } from "../lib/examples.mjs";

/** Starts `name`, connects to `hubPath` (with `options`), runs `body(connection, url)`, cleans up. */
async function withExample(t, name, hubPath, body, options = {}) {
    const example = await startExample(name);
    t.after(() => example.stop());
    const connection = new signalR.HubConnectionBuilder()
        .withUrl(`${example.url}${hubPath}`, { transport: signalR.HttpTransportType.WebSockets, ...options })
        .configureLogging(clientLogLevel)
        .build();
    await withTimeout(connection.start(), 10_000, `${name}: start`);
    t.after(() => connection.stop());
    await body(connection, example);
}

test("minimal: Echo and SendMessage", async (t) => {
    await withExample(t, "minimal", "/chat", async (connection) => {
        assert.deepEqual(await connection.invoke("Echo", { any: ["json", 1] }), { any: ["json", 1] });
        const received = new Promise((resolve) => connection.on("ReceiveMessage", (...args) => resolve(args)));
        await connection.invoke("SendMessage", "ann", "hi");
        assert.deepEqual(await withTimeout(received, 5_000, "ReceiveMessage"), ["ann", "hi"]);
    });
});

test("typed: SendMessage, Join and SendToRoom through #[hub] and #[hub_client]", async (t) => {
    await withExample(t, "typed", "/chat", async (connection) => {
        const messages = [];
        connection.on("ReceiveMessage", (user, text) => messages.push([user, text]));
        await connection.invoke("SendMessage", "ann", "hi");
        await connection.invoke("Join", "room");
        await connection.invoke("SendToRoom", "room", "to the room");
        await assert.rejects(connection.invoke("SendToRoom", "", "x"), /HubException: a room name is required/);
        await withTimeout((async () => { while (messages.length < 2) await new Promise((r) => setTimeout(r, 10)); })(),
            5_000, "two messages");
        assert.deepEqual(messages, [["ann", "hi"], [connection.connectionId, "to the room"]]);
    });
});

test("hub_context: a POST to an axum handler reaches the hub's clients", async (t) => {
    await withExample(t, "hub_context", "/notifications", async (connection, example) => {
        const notified = new Promise((resolve) => connection.on("Notify", resolve));
        const response = await fetch(`${example.url}/notify`, { method: "POST", body: "hello" });
        assert.equal(response.status, 202);
        assert.equal(await withTimeout(notified, 5_000, "Notify"), "hello");
    });
});

test("streaming: Countdown streams down to 0, Sum reads an upload stream", async (t) => {
    await withExample(t, "streaming", "/streams", async (connection) => {
        const items = await withTimeout(new Promise((resolve, reject) => {
            const got = [];
            connection.stream("Countdown", 3).subscribe({ next: (n) => got.push(n), complete: () => resolve(got), error: reject });
        }), 10_000, "Countdown");
        assert.deepEqual(items, [3, 2, 1, 0]);
        const subject = new signalR.Subject();
        const sum = connection.invoke("Sum", subject);
        for (const n of [1, 2, 39]) subject.next(n);
        subject.complete();
        assert.equal(await withTimeout(sum, 5_000, "Sum"), 42);
    });
});

test("jwt: negotiate without a token is 401; the printed token signs in", async (t) => {
    const example = await startExample("jwt");
    t.after(() => example.stop());
    const refused = await fetch(`${example.url}/chat/negotiate?negotiateVersion=1`, { method: "POST" });
    assert.equal(refused.status, 401);
    await withTimeout((async () => { while (!/Token for alice: /.test(example.output())) await new Promise((r) => setTimeout(r, 10)); })(),
        5_000, "the printed token");
    const token = /Token for alice: (\S+)/.exec(example.output())[1];
    const connection = new signalR.HubConnectionBuilder()
        .withUrl(`${example.url}/chat`, { accessTokenFactory: () => token })
        .configureLogging(clientLogLevel)
        .build();
    await withTimeout(connection.start(), 10_000, "jwt: start");
    t.after(() => connection.stop());
    assert.equal(await connection.invoke("WhoAmI"), "alice");
});
