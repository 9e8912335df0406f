// The jQuery SignalR 2.4.3 client (npm `signalr`, on jQuery 3) in headless Chromium against a
// classic SignalR 2.x server: on each transport, through the server's generated proxy
// (`<script src="/signalr/hubs">`) and through `$.hubConnection()` + `createHubProxy`.
//
// Server under test: $CLASSIC_SERVER_CMD (see tests/lib/server.mjs); the page is served from a
// front door of ours on another port that forwards /signalr and /broadcast to it and can cut the
// network (tests/lib/frontdoor.mjs).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { launchBrowser, openPage } from "./lib/browser.mjs";
import { startFrontDoor } from "./lib/frontdoor.mjs";
import { defaultPeer, serverCommand, startServer } from "./lib/server.mjs";

const TRANSPORTS = ["webSockets", "serverSentEvents", "longPolling"];
const MODES = [
    { mode: "generated", label: "generated proxy ($.connection.testHub)", query: "?hubs=1" },
    { mode: "manual", label: "$.hubConnection() + createHubProxy", query: "" },
];
const WAIT_MS = 10_000;
const RECONNECT_WAIT_MS = 20_000;
const CONNECTED = 1; // $.signalR.connectionState.connected

/** Resolves with the first truthy `probe()` value, polling; rejects after `timeoutMs`. */
async function until(probe, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const value = await probe();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
        await sleep(50);
    }
}

/** One jQuery connection in a page, driven through window.harness. */
class Client {
    constructor(page, info) {
        this.page = page;
        this.key = info.key;
        this.id = info.id;
        this.info = info;
    }

    static async open(page, options) {
        const info = await page.evaluate((o) => window.harness.open(o), options);
        return new Client(page, info);
    }

    call(hub, method, ...args) {
        return this.page.evaluate(([k, h, m, a]) => window.harness.call(k, h, m, a),
            [this.key, hub, method, args]);
    }

    /** Calls a method that must succeed; returns its result. */
    async result(hub, method, ...args) {
        const outcome = await this.call(hub, method, ...args);
        assert.ok(outcome.ok, `${hub}.${method}(${JSON.stringify(args).slice(1, -1)}) failed: ${outcome.error?.message}`);
        return outcome.result;
    }

    test(method, ...args) {
        return this.result("testHub", method, ...args);
    }

    events() {
        return this.page.evaluate((k) => window.harness.events(k), this.key);
    }

    currentInfo() {
        return this.page.evaluate((k) => window.harness.info(k), this.key);
    }

    setState(hub, values) {
        return this.page.evaluate(([k, h, v]) => window.harness.setState(k, h, v), [this.key, hub, values]);
    }

    /** The client-method calls received so far ({ hub, method, args, at }). */
    async calls(method) {
        return (await this.events()).filter((e) => e.type === "client" && (!method || e.method === method));
    }

    /** Waits for a client-method call of `method` whose arguments equal `args`. */
    async waitForCall(method, args, timeoutMs = WAIT_MS) {
        return until(async () => (await this.calls(method)).find((e) => isDeepEqual(e.args, args)),
            timeoutMs, () => `client method ${method}(${JSON.stringify(args).slice(1, -1)})`);
    }

    async waitForEvent(type, timeoutMs = WAIT_MS) {
        return until(async () => (await this.events()).find((e) => e.type === type), timeoutMs,
            () => `the connection's ${type} event`);
    }

    stop() {
        return this.page.evaluate((k) => window.harness.stop(k), this.key);
    }
}

function isDeepEqual(a, b) {
    try {
        assert.deepStrictEqual(a, b);
        return true;
    } catch {
        return false;
    }
}

/** The connectionData of the last forwarded request to `action` on `transport`. */
function lastConnectionData(door, action, transport) {
    const request = door.requests.findLast((r) => {
        const url = new URL(r.url, "http://x");
        return url.pathname.toLowerCase() === `/signalr/${action}` && url.searchParams.get("transport") === transport;
    });
    assert.ok(request, `no /signalr/${action} request on ${transport} went through the front door`);
    return JSON.parse(new URL(request.url, "http://x").searchParams.get("connectionData"));
}

const command = serverCommand();
if (!command) {
    const why = `no CLASSIC_SERVER_CMD given and the real classic server (${defaultPeer}) is not there; nothing was tested`;
    console.log(`skipped: ${why}`);
    test("jQuery SignalR 2.4.3 against a classic server", { skip: why }, () => {});
} else {
    let server;
    let door;
    let browser;

    before(async () => {
        server = await startServer(command);
        door = await startFrontDoor(server.url);
        browser = await launchBrowser();
        console.log(`# classic server at ${server.url} (${server.command}); page at ${door.url}`);
    });

    after(async () => {
        await browser?.close();
        await door?.close();
        await server?.stop();
    });

    let groupSerial = 0;

    for (const transport of TRANSPORTS) {
        for (const { mode, label, query } of MODES) {
            describe(`${transport}, ${label}`, { timeout: 120_000 }, () => {
                let page;
                let client;

                before(async () => {
                    page = await openPage(browser, `${door.url}/${query}`);
                    client = await Client.open(page, { mode, transport });
                });

                after(async () => {
                    await page?.context().close();
                });

                test("starts on that transport; both hubs are in connectionData", async () => {
                    assert.equal(client.info.transport, transport);
                    assert.equal(client.info.state, CONNECTED);
                    assert.match(client.id, /^[0-9a-f-]{36}$/i);
                    const hubs = lastConnectionData(door, "connect", transport).map((h) => h.name).sort();
                    assert.deepEqual(hubs, ["renamed", "testhub"], "jQuery sends the lower-cased proxy names");
                    assert.equal(await client.test("GetConnectionId"), client.id);
                    assert.equal(await client.test("GetTransportName"), transport);
                });

                test("invoke returns results: Echo, Add", async () => {
                    assert.equal(await client.test("Echo", "hello ✓ \"quoted\" & <tags>"), "hello ✓ \"quoted\" & <tags>");
                    assert.equal(await client.test("Add", 2, 3), 5);
                    assert.equal(await client.test("Add", -40, 2), -38);
                });

                test("arguments convert as SignalR 2.4's JSON.NET binds them: form strings to numbers, numbers to strings", async () => {
                    assert.equal(await client.test("Add", "1", " 2 "), 3);
                    assert.equal(await client.test("Echo", 5), "5");
                    assert.equal(await client.test("Echo", 1.5), "1.5");
                    assert.equal(await client.test("Echo", true), "true");
                    assert.deepEqual(await client.test("EchoObject", { name: "n", value: "7" }), { Name: "n", Value: 7 });
                    assert.deepEqual(await client.test("UpdateStockPrice", { Symbol: "MSFT", Price: "1,234.5" }),
                        { Symbol: "MSFT", Price: 1235.5 });
                    // What JSON.NET refuses: a fraction for an int, text that is no number.
                    for (const args of [["1.5", 1], [2.5, 1], ["x", 1]]) {
                        const refused = await client.call("testHub", "Add", ...args);
                        assert.equal(refused.ok, false, `Add(${JSON.stringify(args).slice(1, -1)}) must fail`);
                        assert.equal(refused.error.message, "There was an error invoking Hub method 'testhub.Add'.");
                    }
                });

                test("client methods: InvokeWithString → message, SendManyArgs → manyArgs with seven arguments", async () => {
                    const text = `to the caller over ${transport}`;
                    const outcome = await client.call("testHub", "InvokeWithString", text);
                    assert.ok(outcome.ok, outcome.error?.message);
                    assert.equal(outcome.hasResult, false, "a void method resolves with no value");
                    await client.waitForCall("message", [text]);

                    assert.ok((await client.call("testHub", "SendManyArgs")).ok);
                    await client.waitForCall("manyArgs",
                        [1, "two", 3.5, true, [4, 5], { Symbol: "MSFT", Price: 12.34 }, "seven"]);
                });

                test("caller state goes up with each call, and changed keys come back merged", async () => {
                    await client.setState("testHub", { name: "ann", count: 1 });
                    const outcome = await client.call("testHub", "GetStateName");
                    assert.ok(outcome.ok, outcome.error?.message);
                    assert.equal(outcome.result, "ann");
                    assert.deepEqual(outcome.state, { name: "ann", count: 2, greeted: "hello ann" });
                    const again = await client.call("testHub", "GetStateName");
                    assert.deepEqual(again.state, { name: "ann", count: 3, greeted: "hello ann" });
                });

                test("progress: CountWithProgress(3) reports 1, 2, 3, then returns done", async (t) => {
                    const outcome = await client.call("testHub", "CountWithProgress", 3);
                    assert.ok(outcome.ok, outcome.error?.message);
                    assert.equal(outcome.result, "done");
                    // Every report reaches the client, in order...
                    const reports = await until(async () => {
                        const values = (await client.events())
                            .filter((e) => e.type === "progress" && e.callId === outcome.callId)
                            .map((e) => e.value);
                        return values.length >= 3 && values;
                    }, WAIT_MS, () => `three progress reports for call ${outcome.callId}`);
                    assert.deepEqual(reports, [1, 2, 3]);
                    // ...and the call's progress callbacks saw them in that order until its result
                    // came. The result does not travel with the reports (on long polling and SSE it
                    // is the /send response, the reports come by the poll or the event stream), so
                    // it can overtake the last of them, even on the real server; jQuery then drops
                    // the late ones.
                    assert.deepEqual(outcome.progress, reports.slice(0, outcome.progress.length));
                    if (outcome.progress.length < reports.length) {
                        t.diagnostic(`the result overtook progress: the call saw ${JSON.stringify(outcome.progress)}`);
                    }
                });

                test("errors: a HubException keeps its message and data, any other exception stays secret", async () => {
                    const hubError = await client.call("testHub", "ThrowHubException", "boom");
                    assert.equal(hubError.ok, false);
                    assert.equal(hubError.error.message, "boom");
                    assert.equal(hubError.error.source, "HubException");
                    assert.deepEqual(hubError.error.data, { Code: 42 });

                    const secret = `secret-${transport}-${mode}`;
                    const generic = await client.call("testHub", "ThrowException", secret);
                    assert.equal(generic.ok, false);
                    assert.equal(generic.error.message, "There was an error invoking Hub method 'testhub.ThrowException'.");
                    assert.equal(generic.error.source, "Exception");
                    assert.ok(!JSON.stringify(generic).includes(secret), "the exception's message must not reach the client");
                    // The connection is still usable.
                    assert.equal(await client.test("Echo", "after errors"), "after errors");
                });

                test("groups: JoinGroup, SendToGroup reaches the member, after LeaveGroup nothing", async () => {
                    const group = `room-${++groupSerial}`;
                    assert.ok((await client.call("testHub", "JoinGroup", group)).ok);
                    assert.ok((await client.call("testHub", "SendToGroup", group, "hello room")).ok);
                    await client.waitForCall("groupMessage", [group, "hello room"]);
                    assert.ok((await client.call("testHub", "LeaveGroup", group)).ok);
                    assert.ok((await client.call("testHub", "SendToGroup", group, "after leave")).ok);
                    // Messages to one connection keep their order: once this marker is in, the
                    // group message would have been too.
                    const marker = `marker after leaving ${group}`;
                    assert.ok((await client.call("testHub", "InvokeWithString", marker)).ok);
                    await client.waitForCall("message", [marker]);
                    const stray = (await client.calls("groupMessage")).filter((e) => e.args[1] === "after leave");
                    assert.deepEqual(stray, [], "no group message after LeaveGroup");
                });

                test("two hubs on one connection: renamed.Echo beside testHub", async () => {
                    assert.equal(await client.result("renamed", "Echo", "to renamed"), "to renamed");
                    assert.equal(await client.test("Echo", "to testHub"), "to testHub");
                });

                test("network drop: reconnecting, reconnected with the same id, the message sent meanwhile arrives", async () => {
                    const group = `kept-${++groupSerial}`;
                    assert.ok((await client.call("testHub", "JoinGroup", group)).ok);
                    const before = (await client.events()).length;
                    const refusedBefore = door.refused();
                    let droppedAt = 0;

                    door.block();
                    let unblocked = false;
                    try {
                        droppedAt = Date.now();
                        assert.ok(door.drop() > 0, "the connection's traffic went through the front door");
                        await until(async () => (await client.events()).slice(before)
                            .find((e) => e.type === "reconnecting"), WAIT_MS, () => "reconnecting");
                        const away = `sent while ${transport} was away (${mode})`;
                        const response = await fetch(`${server.url}/broadcast?msg=${encodeURIComponent(away)}`,
                            { signal: AbortSignal.timeout(WAIT_MS) });
                        assert.equal(response.status, 200, "GET /broadcast on the server itself");
                        await response.arrayBuffer();
                        // Let at least one reconnect attempt meet the blocked door.
                        await until(() => door.refused() > refusedBefore, RECONNECT_WAIT_MS,
                            () => "a reconnect attempt while the network is down");
                        door.unblock();
                        unblocked = true;

                        const reconnected = await until(async () => (await client.events()).slice(before)
                            .find((e) => e.type === "reconnected"), RECONNECT_WAIT_MS, () => "reconnected");
                        assert.equal(reconnected.id, client.id, "same connection id after the reconnect");
                        assert.equal(reconnected.transport, transport);
                        const reconnects = door.requests.filter((r) => r.at >= droppedAt
                            && new URL(r.url, "http://x").pathname.toLowerCase() === "/signalr/reconnect");
                        assert.ok(reconnects.length >= 1, "the client came back through /signalr/reconnect");
                        assert.ok(!door.requests.some((r) => r.at >= droppedAt
                            && /^\/signalr\/(negotiate|connect)$/i.test(new URL(r.url, "http://x").pathname)),
                        "no new negotiate or connect: it is the same connection");
                        await client.waitForCall("broadcast", [away], RECONNECT_WAIT_MS);
                        const copies = (await client.calls("broadcast")).filter((e) => e.args[0] === away);
                        assert.equal(copies.length, 1, "delivered exactly once");

                        const info = await client.currentInfo();
                        assert.equal(info.state, CONNECTED);
                        assert.equal(await client.test("GetConnectionId"), client.id);
                        assert.deepEqual(await client.test("GetLifetimeEvents"), ["OnConnected", "OnReconnected"]);
                        // Group membership survives the reconnect (the groups token went along).
                        assert.ok((await client.call("testHub", "SendToGroup", group, "still here")).ok);
                        await client.waitForCall("groupMessage", [group, "still here"]);
                        const types = (await client.events()).slice(before).map((e) => e.type);
                        assert.ok(!types.includes("disconnected"), `no disconnect on the way: ${types}`);
                    } finally {
                        if (!unblocked) door.unblock();
                    }
                });

                test("stop: OnDisconnected runs (WasDisconnected from a second connection)", async () => {
                    const { id } = client;
                    await client.stop();
                    await client.waitForEvent("disconnected");
                    const observer = await Client.open(page, { mode: "manual", transport });
                    try {
                        // /abort makes it immediate; allow a moment for the server to process it.
                        await until(async () => (await observer.test("WasDisconnected", id)) === true, WAIT_MS,
                            () => `WasDisconnected(${id}) to be true`);
                        assert.equal(await observer.test("WasDisconnected", observer.id), false);
                    } finally {
                        await observer.stop();
                    }
                    assert.deepEqual(page.errors, [], "no script errors on the page");
                    assert.deepEqual(page.foreign, [], "no request left the page's origin");
                });
            });
        }
    }
}
