// Two demo servers on one Redis (`--redis`), with the official @microsoft/signalr client in Node:
// chat rooms, join and leave notices and private messages across the servers, one stock market
// feeding both, the shape moved from the other server, and every status page hearing both
// servers. Skipped, saying so, when redis-server is not installed (./scripts/test.sh installs it).

import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

import { NO_REDIS, startRedis } from "./lib/redis.mjs";
import { startServer } from "./lib/server.mjs";

const { HttpTransportType } = signalR;

function connect(url, hub, transport = HttpTransportType.WebSockets, protocol = "json") {
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(`${url}${hub}`, { transport })
        .configureLogging(signalR.LogLevel.None);
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

/** A chat client that records what it receives. */
function chatClient(url, name, room, transport, protocol) {
    const client = { name, room, messages: [], privates: [], notices: [], connection: connect(url, "/hubs/chat", transport, protocol) };
    client.connection.on("ReceiveMessage", (m) => client.messages.push(m));
    client.connection.on("ReceivePrivate", (m) => client.privates.push(m));
    client.connection.on("UserJoined", (who, where) => client.notices.push(`${who} joined #${where}`));
    client.connection.on("UserLeft", (who, where) => client.notices.push(`${who} left #${where}`));
    return client;
}

test("two servers on one Redis: chat, private messages, one stock market, the shape and the status pages cross servers", async (t) => {
    const redis = await startRedis();
    if (!redis) {
        console.log(`# SKIPPED: ${NO_REDIS}`);
        t.skip(NO_REDIS);
        return;
    }
    t.after(() => redis.stop());
    const a = await startServer({ args: ["--redis", redis.address] });
    t.after(() => a.stop());
    const b = await startServer({ args: ["--redis", redis.address, "--no-market"] });
    t.after(() => b.stop());
    assert.match(a.output(), /every hub is on the Redis backplane/);
    assert.match(b.output(), /no stock market here/);

    // The status hub shows the backplane: every hub under its name, subscribed.
    const statusA = connect(a.url, "/hubs/status");
    const statusB = connect(b.url, "/hubs/status", HttpTransportType.LongPolling, "messagepack");
    const heardByA = new Set();
    statusA.on("Stats", (s) => heardByA.add(s.server.url));
    t.after(() => Promise.all([statusA.stop(), statusB.stop()]));
    await Promise.all([statusA.start(), statusB.start()]);
    for (const [status, market] of [[statusA, true], [statusB, false]]) {
        let stats;
        for (const deadline = Date.now() + 10_000; ;) {
            stats = await status.invoke("GetStats");
            if (stats.backplane.hubs.every((h) => h.subscribed) || Date.now() > deadline) break;
            await sleep(100);
        }
        assert.equal(stats.backplane.redis, redis.address);
        assert.equal(stats.server.market, market);
        assert.deepEqual(stats.backplane.hubs.map((h) => [h.hub, h.backplaneName, h.subscribed]), [
            ["chat", "Demo.ChatHub", true],
            ["stocks", "Demo.StockTickerHub", true],
            ["shape", "Demo.MoveShapeHub", true],
            ["status", "Demo.StatusHub", true],
        ]);
        for (const hub of stats.backplane.hubs) assert.match(hub.serverName, /_[0-9a-f]{32}$/);
    }

    // Chat: ann (A) and bob (B) in the lobby, cid (B) and eve (A) in rust.
    const ann = chatClient(a.url, "ann", "lobby", HttpTransportType.WebSockets, "json");
    const bob = chatClient(b.url, "bob", "lobby", HttpTransportType.LongPolling, "messagepack");
    const cid = chatClient(b.url, "cid", "rust", HttpTransportType.ServerSentEvents, "json");
    const eve = chatClient(a.url, "eve", "rust", HttpTransportType.WebSockets, "messagepack");
    const people = [ann, bob, cid, eve];
    t.after(() => Promise.all(people.map((c) => c.connection.stop())));
    await Promise.all(people.map((c) => c.connection.start()));
    for (const c of people) await c.connection.invoke("Join", c.name, c.room);
    await until(() => ann.notices.includes("bob joined #lobby") && cid.notices.includes("eve joined #rust"),
        5000, () => `notices: ann ${ann.notices}, cid ${cid.notices}`);
    // The member list Join answers is this server's.
    assert.deepEqual((await bob.connection.invoke("Join", "bob", "lobby")).members, ["bob"]);
    await until(() => ann.notices.length === 2, 5000, () => `ann: ${ann.notices}`);

    await ann.connection.invoke("SendToRoom", "hello from A");
    await bob.connection.invoke("SendToRoom", "hello from B");
    await eve.connection.invoke("SendToRoom", "rust on A");
    await until(() => ann.messages.length >= 2 && bob.messages.length >= 2 && cid.messages.length >= 1,
        5000, () => `ann ${ann.messages.length}, bob ${bob.messages.length}, cid ${cid.messages.length}`);

    // Private messages by name, both ways across the servers (and across rooms).
    assert.equal(await ann.connection.invoke("SendPrivate", "bob", "psst from A"), 0,
        "no connection on A is called bob");
    await bob.connection.invoke("SendPrivate", "eve", "psst from B");
    await until(() => bob.privates.length === 1 && eve.privates.length === 1, 5000,
        () => `bob ${bob.privates.length}, eve ${eve.privates.length}`);

    await bob.connection.stop();
    await until(() => ann.notices.includes("bob left #lobby"), 5000, () => `ann: ${ann.notices}`);
    await sleep(500); // anything extra (a duplicate) would show up now

    const texts = (list) => list.map((m) => `${m.from}: ${m.text}`).sort();
    assert.deepEqual(texts(ann.messages), ["ann: hello from A", "bob: hello from B"]);
    assert.deepEqual(texts(bob.messages), ["ann: hello from A", "bob: hello from B"]);
    assert.deepEqual(texts(cid.messages), ["eve: rust on A"]);
    assert.deepEqual(texts(eve.messages), ["eve: rust on A"]);
    assert.deepEqual(bob.privates.map((m) => [m.from, m.to, m.text]), [["ann", "bob", "psst from A"]]);
    assert.deepEqual(eve.privates.map((m) => [m.from, m.to, m.text]), [["bob", "eve", "psst from B"]]);
    assert.deepEqual(ann.privates, []);
    assert.deepEqual(cid.privates, []);
    assert.deepEqual(ann.notices, ["bob joined #lobby", "bob joined #lobby", "bob left #lobby"]);
    assert.deepEqual(cid.notices, ["eve joined #rust"]);
    assert.deepEqual(eve.notices, []);

    // Stocks: A runs the market, B has none; both servers' clients get the same one feed.
    const stockA = connect(a.url, "/hubs/stocks");
    const stockB = connect(b.url, "/hubs/stocks", HttpTransportType.ServerSentEvents);
    t.after(() => Promise.all([stockA.stop(), stockB.stop()]));
    const feeds = [stockA, stockB].map((connection) => {
        const feed = { events: [] };
        connection.on("UpdateStockPrice", (s) => feed.events.push(`${s.symbol} ${s.price} ${s.lastChange}`));
        connection.on("MarketOpened", () => feed.events.push("opened"));
        connection.on("MarketClosed", () => feed.events.push("closed"));
        return feed;
    });
    await Promise.all([stockA.start(), stockB.start()]);
    assert.equal(await stockA.invoke("GetMarketState"), "Open");
    assert.equal(await stockB.invoke("GetMarketState"), "Elsewhere");
    assert.deepEqual(await stockB.invoke("GetAllStocks"), []);
    await assert.rejects(stockB.invoke("OpenMarket"), /This server runs no stock market/);
    await stockA.invoke("CloseMarket");
    await until(() => feeds.every((f) => f.events.includes("closed")), 5000, () => "MarketClosed on both");
    for (const feed of feeds) feed.events.length = 0;
    await stockA.invoke("OpenMarket");
    await sleep(1500);
    await stockA.invoke("CloseMarket");
    await until(() => feeds.every((f) => f.events.at(-1) === "closed"), 5000, () => "MarketClosed on both");
    const [feedA, feedB] = feeds.map((f) => f.events);
    assert.ok(feedA.length > 3, `prices moved while open: ${feedA.length} events`);
    assert.equal(feedA[0], "opened");
    assert.deepEqual(feedB, feedA, "the clients of both servers get one and the same feed");

    // The shape: a move on B reaches a page on A.
    const shapeA = connect(a.url, "/hubs/shape");
    const shapeB = connect(b.url, "/hubs/shape");
    t.after(() => Promise.all([shapeA.stop(), shapeB.stop()]));
    const moves = [];
    shapeA.on("UpdateShape", (m) => moves.push(m));
    await Promise.all([shapeA.start(), shapeB.start()]);
    await shapeB.invoke("UpdateModel", { left: 123, top: 45 });
    await until(() => moves.length > 0, 5000, () => "UpdateShape on A");
    assert.deepEqual(moves, [{ left: 123, top: 45 }]);

    // Every status page hears both servers.
    await until(() => heardByA.has(a.url) && heardByA.has(b.url), 5000, () => `A's page heard ${[...heardByA]}`);
});
