// Stateful reconnect: the official @microsoft/signalr client (10.0.11) with withStatefulReconnect()
// on WebSockets, through a TCP proxy that cuts the connection (interop/lib/proxy.mjs, in this
// process), against
//   - the real ASP.NET Core 10 server (`dotnet-peer server` from ../shared/peers next to the
//     checkout, or $DOTNET_PEERS_DIR): the baseline that shows what the checks expect is right; without
//     the peers these tests are skipped, and say so;
//   - our conformance-server ($CONFORMANCE_SERVER_BIN, or ../target/debug/conformance-server).
// Both serve TestHub with AllowStatefulReconnects at /testhub-stateful.
//
// $STATEFUL_SERVERS picks the servers (comma-separated, default "dotnet,ours");
// STATEFUL_SKIP_SLOW=1 leaves out the check that waits past the server's 15 s disconnect timeout.
//
// What the real client and server do (seen with the real server, and what these tests hold ours to):
// the client resumes inside its WebSockets transport (HttpConnection): it opens a new WebSocket with
// the same connection token, sends a Sequence message and its unacknowledged messages; the server
// answers with its own Sequence and replays what the client has not acknowledged. The HubConnection
// stays Connected and raises neither onreconnecting nor onreconnected (those belong to an automatic
// reconnect, which makes a new connection with a new id); no new negotiate is made.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { conformanceServerBin, startServer } from "../lib/server.mjs";
import { startProxy } from "../lib/proxy.mjs";
import {
    MessagePackHubProtocol,
    clientLogLevel,
    signalR,
    stopQuietly,
    waitFor,
    withTimeout,
} from "../lib/client.mjs";

const { HttpTransportType, HubConnectionState } = signalR;

const interopDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const peersDir = process.env.DOTNET_PEERS_DIR
    ? path.resolve(process.env.DOTNET_PEERS_DIR)
    : path.resolve(interopDir, "..", "..", "shared", "peers");
const dotnetPeer = path.join(peersDir, "dotnet-peer");

const HUB = "/testhub-stateful";
const START_MS = 15_000;
const CALL_MS = 20_000;
/** How long to keep listening after the last expected message, so that a duplicate would show. */
const SETTLE_MS = 1_500;
/** Inside ASP.NET's default 15 s disconnect timeout, and past it (the server scans once a second). */
const HOLD_INSIDE_MS = 10_000;
const HOLD_PAST_MS = 20_000;

const selected = (process.env.STATEFUL_SERVERS ?? "dotnet,ours").split(",").map((s) => s.trim()).filter(Boolean);
const skipSlow = process.env.STATEFUL_SKIP_SLOW === "1";

const servers = [
    {
        key: "dotnet",
        name: "the real ASP.NET Core server (dotnet-peer server)",
        skip: existsSync(dotnetPeer) ? false
            : `skipped: ${dotnetPeer} not found (../shared/peers is not next to this checkout), ` +
              "so nothing is checked against the real server",
        start: () => startServer([], { bin: dotnetPeer, leadingArgs: ["server"], timeoutMs: 30_000 }),
    },
    {
        key: "ours",
        name: "our conformance-server",
        skip: false,
        start: () => startServer([], { bin: conformanceServerBin }),
    },
].filter((s) => selected.includes(s.key));

for (const s of servers) {
    if (s.skip) {
        process.stdout.write(`stateful reconnect against ${s.name}: ${s.skip}\n`);
    }
}

const protocolName = (protocol) => (protocol === "messagepack" ? "MessagePack" : "JSON");

/** The connections each test built, stopped before its proxies close. */
const opened = new Map();

/**
 * Builds a stateful-reconnect connection on WebSockets (not started; stopped when the test ends) and
 * records its lifecycle events and the `Message` calls it gets. `stateful: false` leaves out
 * withStatefulReconnect().
 */
function build(t, url, { protocol = "json", automaticReconnect = true, stateful = true } = {}) {
    let builder = new signalR.HubConnectionBuilder()
        .withUrl(url, { transport: HttpTransportType.WebSockets });
    if (stateful) {
        builder = builder.withStatefulReconnect();
    }
    builder = builder
        .withHubProtocol(protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
        .configureLogging(clientLogLevel);
    if (automaticReconnect) {
        builder = builder.withAutomaticReconnect([0, 0, 1_000]);
    }
    const connection = builder.build();
    const events = [];
    connection.onreconnecting((error) => events.push(`reconnecting (${error?.message ?? error})`));
    connection.onreconnected((id) => events.push(`reconnected ${id}`));
    connection.onclose((error) => events.push(`close (${error?.message ?? error})`));
    const messages = [];
    // A block body: a handler that returns a value is taken for a client result.
    connection.on("Message", (message) => {
        messages.push(message);
    });
    t.after(() => stopQuietly(connection));
    opened.set(t, [...(opened.get(t) ?? []), connection]);
    return { connection, events, messages };
}

function call(connection, method, ...args) {
    return withTimeout(connection.invoke(method, ...args), CALL_MS, `invoke("${method}")`);
}

/** A settled promise's outcome, for checks on a call made while the connection was cut. */
function outcome(promise) {
    return promise.then((value) => ({ value }), (error) => ({ error }));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The connection token in a WebSocket request line "GET /hub?id=TOKEN HTTP/1.1". */
function tokenOf(entry) {
    const match = /[?&]id=([^&\s]+)/.exec(entry.request);
    assert.ok(match, `no id= in ${entry.request}`);
    return decodeURIComponent(match[1]);
}

function describeLog(proxy) {
    return proxy.log.map((e) => `#${e.n} +${e.openedAt} ms ${e.request ?? "(nothing)"} -> ` +
        `${e.response ?? "(no answer)"}${e.closedAt !== undefined ? `, closed +${e.closedAt} ms` : ""}`).join("\n");
}

/** The proxy's WebSocket requests to the hub: all with one connection token, at least `min` of them. */
function webSocketRequests(proxy, min) {
    const requests = proxy.requests(/^GET \/testhub-stateful\?/);
    assert.ok(requests.length >= min,
        `expected at least ${min} WebSocket requests (the first and the resumes), got:\n${describeLog(proxy)}`);
    const token = tokenOf(requests[0]);
    for (const r of requests) {
        assert.equal(tokenOf(r), token, `every WebSocket request resumes the same connection:\n${describeLog(proxy)}`);
    }
    assert.equal(proxy.requests(/^POST \S*\/negotiate/).length, 1,
        `one negotiate, none for a resume (a new one would need a new TCP connection after the cut):\n${describeLog(proxy)}`);
    return requests;
}

for (const server of servers) {
    describe(`stateful reconnect against ${server.name}`, { skip: server.skip }, () => {
        let running;
        let target;

        before(async () => {
            running = await server.start();
            target = new URL(running.url);
        });

        after(async () => {
            if (!running) {
                return;
            }
            if (process.env.INTEROP_SERVER_LOGS) {
                process.stderr.write(`--- ${server.name} stderr ---\n${running.stderr()}\n`);
            }
            await running.stop();
        });

        async function proxied(t) {
            const proxy = await startProxy(target.hostname, Number(target.port));
            t.after(async () => {
                await Promise.all((opened.get(t) ?? []).map(stopQuietly));
                opened.delete(t);
                await proxy.close();
            });
            return proxy;
        }

        for (const protocol of ["json", "messagepack"]) {
            test(`${protocolName(protocol)}: 200 invocations, cut after 100 (answers lost on the way to the client) ` +
                "and after 150 (invocations lost on the way to the server): every result and every Message once, " +
                "in order, same connection, no reconnect events", { timeout: 90_000 }, async (t) => {
                const proxy = await proxied(t);
                const { connection, events, messages } = build(t, `${proxy.url(running.url)}${HUB}`, { protocol });
                await withTimeout(connection.start(), START_MS, "start()");
                const id = await call(connection, "GetCallerConnectionId");
                assert.equal(id, connection.connectionId, "GetCallerConnectionId is the negotiated id");

                const echoes = [];
                for (let i = 1; i <= 200; i++) {
                    if (i === 101) {
                        // The server gets both invocations and answers; its answers never reach us.
                        proxy.pause("toClient");
                    } else if (i === 151) {
                        // The client's invocations never reach the server.
                        proxy.pause("toServer");
                    }
                    const sent = call(connection, "InvokeWithString", `m${i}`);
                    const echoed = call(connection, "Echo", `e${i}`);
                    // Awaited below; until then a failure must not count as unhandled.
                    sent.catch(() => {});
                    echoed.catch(() => {});
                    if (i === 101) {
                        await waitFor(() => {
                            const held = proxy.held("toClient").toString("latin1");
                            return held.includes("m101") && held.includes("e101");
                        }, 10_000, "the server's answers to invocation 101, held in the proxy");
                        assert.ok(proxy.drop() > 0, "a connection to cut");
                    } else if (i === 151) {
                        await waitFor(() => proxy.held("toServer").length > 0, 10_000,
                            "the client's invocations 151, held in the proxy");
                        await sleep(200);
                        assert.ok(proxy.drop() > 0, "a connection to cut");
                    }
                    assert.equal(await sent, null, `InvokeWithString ${i}`);
                    echoes.push(await echoed);
                }
                assert.equal(await call(connection, "GetCallerConnectionId"), id, "the same connection id after the cuts");
                assert.equal(connection.connectionId, id);
                await sleep(SETTLE_MS);

                const expected = (prefix) => Array.from({ length: 200 }, (_, k) => `${prefix}${k + 1}`);
                assert.deepEqual(echoes, expected("e"), "every Echo result, in order");
                assert.deepEqual(messages, expected("m"), "every Message once, in order");
                assert.equal(connection.state, HubConnectionState.Connected);
                assert.deepEqual(events, [], "no onreconnecting, onreconnected or onclose");
                webSocketRequests(proxy, 3);
            });

            test(`${protocolName(protocol)}: a burst of 200 sends, cut after the 100th: every Message once, in order`,
                { timeout: 90_000 }, async (t) => {
                    const proxy = await proxied(t);
                    const { connection, events, messages } = build(t, `${proxy.url(running.url)}${HUB}`, { protocol });
                    await withTimeout(connection.start(), START_MS, "start()");
                    const id = connection.connectionId;
                    const sends = [];
                    for (let i = 0; i < 200; i++) {
                        sends.push(connection.send("InvokeWithString", `s${i}`));
                        if (i === 100) {
                            assert.ok(proxy.drop() > 0, "a connection to cut");
                        }
                    }
                    await withTimeout(Promise.all(sends), CALL_MS, "the 200 sends");
                    await waitFor(() => messages.length >= 200, CALL_MS, "200 Message calls");
                    assert.equal(await call(connection, "GetCallerConnectionId"), id, "the same connection id");
                    await sleep(SETTLE_MS);
                    assert.deepEqual(messages, Array.from({ length: 200 }, (_, k) => `s${k}`),
                        "every Message once, in order");
                    assert.deepEqual(events, [], "no onreconnecting, onreconnected or onclose");
                    webSocketRequests(proxy, 2);
                });
        }

        test("JSON: the client resumes while the server still holds the old socket (the RST reached only the client): " +
            "the same connection, and what the server wrote into the dead socket arrives once", { timeout: 60_000 }, async (t) => {
            const proxy = await proxied(t);
            const { connection, events, messages } = build(t, `${proxy.url(running.url)}${HUB}`);
            await withTimeout(connection.start(), START_MS, "start()");
            const id = connection.connectionId;
            assert.equal(await call(connection, "Echo", "before"), "before");

            proxy.pause("toClient");
            const sent = outcome(call(connection, "InvokeWithString", "into the dead socket"));
            const echoed = outcome(call(connection, "Echo", "echo into the dead socket"));
            await waitFor(() => {
                const held = proxy.held("toClient").toString("latin1");
                return held.includes("\"into the dead socket\"") && held.includes("\"echo into the dead socket\"");
            }, 10_000, "the server's answers, held in the proxy");
            assert.ok(proxy.drop({ side: "client" }) > 0, "a connection to cut");

            assert.deepEqual(await sent, { value: null }, "InvokeWithString completes");
            assert.deepEqual(await echoed, { value: "echo into the dead socket" }, "Echo completes");
            assert.equal(await call(connection, "Echo", "after"), "after");
            assert.equal(await call(connection, "GetCallerConnectionId"), id, "the same connection id");
            await sleep(SETTLE_MS);
            assert.deepEqual(messages, ["into the dead socket"], "the Message once");
            assert.deepEqual(events, [], "no onreconnecting, onreconnected or onclose");
            webSocketRequests(proxy, 2);
        });

        for (const [what, hub, stateful] of [
            ["a stateful client on a hub that does not allow it (/testhub)", "/testhub", true],
            ["a client that does not ask for it on /testhub-stateful", HUB, false],
        ]) {
            test(`JSON: no stateful reconnect for ${what}: the start works, a cut is an automatic reconnect ` +
                "with a new connection id", { timeout: 60_000 }, async (t) => {
                const proxy = await proxied(t);
                const { connection, events } = build(t, `${proxy.url(running.url)}${hub}`, { stateful });
                // The client refuses a negotiate answer offering stateful reconnect it did not ask for.
                await withTimeout(connection.start(), START_MS, "start()");
                const id = connection.connectionId;
                assert.equal(await call(connection, "GetCallerConnectionId"), id);
                assert.ok(proxy.drop() > 0, "a connection to cut");
                await waitFor(() => events.length >= 2, CALL_MS, "onreconnecting and onreconnected");
                assert.equal(events.length, 2, `events: ${events}`);
                assert.match(events[0], /^reconnecting /);
                const newId = events[1].slice("reconnected ".length);
                assert.notEqual(newId, id, "a new connection id");
                assert.equal(await call(connection, "GetCallerConnectionId"), newId);
                const tokens = new Set(proxy.requests(/^GET \/testhub(-stateful)?\?/).map(tokenOf));
                assert.equal(tokens.size, 2, `two connections, no resume:\n${describeLog(proxy)}`);
            });
        }

        test("JSON: a resume inside the disconnect timeout (10 s) succeeds; past it (20 s) the server answers 404: " +
            "onclose without automatic reconnect, a new connection (new id) with it",
        { timeout: 90_000, skip: skipSlow ? "STATEFUL_SKIP_SLOW=1 (this check waits 20 s)" : false }, async (t) => {
            const inside = await proxied(t);
            const past = await proxied(t);
            const a = build(t, `${inside.url(running.url)}${HUB}`);
            const b = build(t, `${past.url(running.url)}${HUB}`, { automaticReconnect: false });
            const c = build(t, `${past.url(running.url)}${HUB}`);
            for (const { connection } of [a, b, c]) {
                await withTimeout(connection.start(), START_MS, "start()");
            }
            const [idA, idB, idC] = [a, b, c].map(({ connection }) => connection.connectionId);

            // Cut, and let no new connection through until released.
            for (const proxy of [inside, past]) {
                proxy.hold();
                assert.ok(proxy.drop() > 0, "connections to cut");
            }
            const pending = [a, b, c].map(({ connection }) =>
                outcome(connection.invoke("Echo", "sent while cut")));

            await sleep(HOLD_INSIDE_MS);
            inside.release();
            assert.deepEqual(await withTimeout(pending[0], CALL_MS, "A's Echo"), { value: "sent while cut" },
                "a resume after 10 s: the call made while cut completes");
            assert.equal(await call(a.connection, "GetCallerConnectionId"), idA, "A keeps its connection id");

            await sleep(HOLD_PAST_MS - HOLD_INSIDE_MS);
            past.release();
            const resultB = await withTimeout(pending[1], CALL_MS, "B's Echo");
            assert.ok(resultB.error, "B's call made while cut fails");
            await waitFor(() => b.events.length > 0, CALL_MS, "B's onclose");
            assert.equal(b.events.length, 1, `B: ${b.events}`);
            assert.match(b.events[0], /^close \(.+\)$/, "B closes with an error");
            assert.equal(b.connection.state, HubConnectionState.Disconnected);

            const resultC = await withTimeout(pending[2], CALL_MS, "C's Echo");
            assert.ok(resultC.error, "C's call made while cut fails");
            await waitFor(() => c.events.some((e) => e.startsWith("reconnected")), CALL_MS, "C's onreconnected");
            assert.equal(c.events.length, 2, `C: ${c.events}`);
            assert.match(c.events[0], /^reconnecting /);
            const idC2 = c.events[1].slice("reconnected ".length);
            assert.notEqual(idC2, idC, "C: a new connection id");
            assert.equal(await call(c.connection, "GetCallerConnectionId"), idC2);
            assert.equal(await call(c.connection, "Echo", "after"), "after");

            assert.deepEqual(a.events, [], "A: no onreconnecting, onreconnected or onclose");
            assert.equal(a.connection.state, HubConnectionState.Connected);
            webSocketRequests(inside, 2);
            // On the other proxy: B's and C's WebSockets (101), each one's resume (404), C's new connection.
            const byToken = new Map();
            for (const r of past.requests(/^GET \/testhub-stateful\?/)) {
                const token = tokenOf(r);
                byToken.set(token, [...(byToken.get(token) ?? []), r]);
            }
            const [first, second, third] = [...byToken.values()];
            for (const requests of [first, second]) {
                assert.ok(requests && requests.length >= 2, `a WebSocket and its resume:\n${describeLog(past)}`);
                assert.match(requests[0].response ?? "", /^HTTP\/1\.1 101\b/, describeLog(past));
                for (const r of requests.slice(1)) {
                    assert.match(r.response ?? "", /^HTTP\/1\.1 404\b/,
                        `a resume past the disconnect timeout is answered 404:\n${describeLog(past)}`);
                }
            }
            assert.ok(third && third.length === 1, `C's new connection:\n${describeLog(past)}`);
            assert.match(third[0].response ?? "", /^HTTP\/1\.1 101\b/, describeLog(past));
        });
    });
}
