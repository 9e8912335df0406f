// Conformance suite: the official @microsoft/signalr client (10.0.11) against the Rust
// `conformance-server`, which serves the endpoints and hub methods of ASP.NET Core SignalR's own
// TypeScript client functional tests (src/SignalR/clients/ts/FunctionalTests). The expected
// values and error texts are those the ASP.NET Core test server produces (detailed errors on).
//
// One server process is started for the whole file. Binary: $CONFORMANCE_SERVER_BIN, or
// ../target/debug/conformance-server (`cargo build -p conformance-server`).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";

import { conformanceServerBin, startServer } from "../lib/server.mjs";
import {
    buildConnection,
    clientLogLevel,
    closed,
    signalR,
    stopQuietly,
    withTimeout,
} from "../lib/client.mjs";

const require = createRequire(import.meta.url);
// HttpConnection (a connection without the hub protocol, for /echo) is not exported by the
// package's entry point; ASP.NET's functional tests import it from the distribution the same way.
const { HttpConnection } = require("@microsoft/signalr/dist/cjs/HttpConnection.js");
const { getUserAgentHeader } = require("@microsoft/signalr/dist/cjs/Utils.js");

const { HttpTransportType, HubConnectionState, TransferFormat } = signalR;

const TEST = { timeout: 20_000 };
const START_MS = 10_000;
const CALL_MS = 10_000;
const CLOSE_MS = 10_000;

const MESSAGE = "你好，世界！";

/** ASP.NET's error text for an exception other than HubException (detailed errors on). */
const INVOKE_ERROR = (method, type, message) =>
    `An unexpected error occurred invoking '${method}' on the server. ${type}: ${message}`;
/** ASP.NET's error text for an exception thrown while a stream is running. */
const STREAM_ERROR = (type, message) =>
    `An error occurred on the server while streaming results. ${type}: ${message}`;
const UNAUTHORIZED = "Failed to complete negotiation with the server: Error: Unauthorized: Status code '401'";
const BAD_NEGOTIATE =
    "Failed to complete negotiation with the server: Error: Some response from server: Status code '400'";

/** EchoComplexObject's argument, as each protocol carries it (FunctionalTests "can handle different types"). */
function complexObject(protocol) {
    return {
        ByteArray: protocol === "json" ? "aGVsbG8=" : new Uint8Array([0x68, 0x65, 0x6c, 0x6c, 0x6f]),
        DateTime: protocol === "json" ? "2002-04-01T10:20:15Z" : new Date(Date.UTC(2002, 3, 1, 10, 20, 15)),
        Guid: "00010203-0405-0607-0706-050403020100",
        IntArray: [0x01, 0x02, 0x03, 0xff],
        String: "Hello, World!",
    };
}

/** SendComplexObject's result ("can receive different types"). */
function sentComplexObject(protocol) {
    return {
        ByteArray: protocol === "json" ? "AQID" : new Uint8Array([0x1, 0x2, 0x3]),
        DateTime: protocol === "json" ? "2000-01-01T00:00:00Z" : new Date(Date.UTC(2000, 0, 1)),
        Guid: "00010203-0405-0607-0706-050403020100",
        IntArray: [0x01, 0x02, 0x03],
        String: "hello world",
    };
}

let server;

before(async () => {
    server = await startServer([], { bin: conformanceServerBin });
});

after(async () => {
    if (!server) {
        return;
    }
    if (process.env.INTEROP_SERVER_LOGS) {
        process.stderr.write(`--- conformance-server stderr ---\n${server.stderr()}\n`);
    }
    await server.stop();
});

const cells = [
    { transport: "WebSockets", protocol: "json" },
    { transport: "WebSockets", protocol: "messagepack" },
    { transport: "ServerSentEvents", protocol: "json" },
    { transport: "LongPolling", protocol: "json" },
    { transport: "LongPolling", protocol: "messagepack" },
];

function cellName(cell) {
    return `${cell.transport} × ${cell.protocol === "messagepack" ? "MessagePack" : "JSON"}`;
}

/**
 * Builds and starts a hub connection for a test; it is stopped when the test ends.
 * @param {import("node:test").TestContext} t
 * @param {string} path e.g. "/testhub"
 */
async function open(t, path, options = {}) {
    const connection = buildConnection(`${server.url}${path}`, options);
    t.after(() => stopQuietly(connection));
    await withTimeout(connection.start(), START_MS, `start() on ${path}`);
    return connection;
}

function call(connection, method, ...args) {
    return withTimeout(connection.invoke(method, ...args), CALL_MS, `invoke("${method}")`);
}

/** Subscribes to a server-to-client stream; resolves with its items and its error, if any. */
function collect(connection, method, ...args) {
    return withTimeout(new Promise((resolve) => {
        const items = [];
        connection.stream(method, ...args).subscribe({
            next: (item) => items.push(item),
            complete: () => resolve({ items, error: undefined }),
            error: (error) => resolve({ items, error }),
        });
    }), CALL_MS, `stream("${method}")`);
}

/** Records every call of client method `name` on `connection`. */
function record(connection, name) {
    const calls = [];
    const waiters = [];
    connection.on(name, (...args) => {
        calls.push(args);
        for (const waiter of waiters.splice(0)) {
            waiter();
        }
    });
    return {
        calls,
        /** Resolves once `count` calls have arrived. */
        async until(count) {
            while (calls.length < count) {
                await withTimeout(new Promise((resolve) => waiters.push(resolve)), CALL_MS,
                    `${count} call(s) of ${name}`);
            }
            return calls;
        },
    };
}

/**
 * Proves that nothing else is on its way to `connection`: the server calls the client's `Message`
 * through InvokeWithString and we wait for it. Messages to one connection arrive in order, so
 * anything sent to it before this call has arrived by the time it returns.
 */
async function flush(connection) {
    const marker = `marker-${Math.random()}`;
    const received = new Promise((resolve) => {
        const handler = (message) => {
            if (message === marker) {
                connection.off("Message", handler);
                resolve();
            }
        };
        connection.on("Message", handler);
    });
    await call(connection, "InvokeWithString", marker);
    await withTimeout(received, CALL_MS, "the flush marker");
}

async function getJwtToken(user) {
    const response = await fetch(`${server.url}/generateJwtToken${user ? `?user=${encodeURIComponent(user)}` : ""}`);
    assert.equal(response.status, 200);
    return response.text();
}

async function clientResult(connectionId) {
    const response = await withTimeout(fetch(`${server.url}/clientresult/${encodeURIComponent(connectionId)}`),
        CALL_MS, "GET /clientresult");
    assert.equal(response.status, 200);
    return response.text();
}

for (const cell of cells) {
    const base = { transport: HttpTransportType[cell.transport], protocol: cell.protocol };
    const openCell = (t, path = "/testhub", extra = {}) => open(t, path, { ...base, ...extra });

    describe(`${cellName(cell)}: /testhub`, () => {
        test("Echo returns its argument; send() of Echo completes", TEST, async (t) => {
            const connection = await openCell(t);
            const closeError = closed(connection);
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
            await withTimeout(connection.send("Echo", MESSAGE), CALL_MS, "send(Echo)");
            await withTimeout(connection.stop(), CLOSE_MS, "stop()");
            assert.equal(await withTimeout(closeError, CLOSE_MS, "onclose"), undefined);
        });

        test("a stopped connection can be started again", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
            await withTimeout(connection.stop(), CLOSE_MS, "stop()");
            await withTimeout(connection.start(), START_MS, "second start()");
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
        });

        test("GetCallerConnectionId equals connection.connectionId", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(typeof connection.connectionId, "string");
            assert.equal(await call(connection, "GetCallerConnectionId"), connection.connectionId);
        });

        test("GetActiveTransportName names the transport", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(await call(connection, "GetActiveTransportName"), cell.transport);
        });

        test("ThrowException rejects with ASP.NET's detailed error", TEST, async (t) => {
            const connection = await openCell(t);
            await assert.rejects(call(connection, "ThrowException", "An error occurred."), {
                message: INVOKE_ERROR("ThrowException", "InvalidOperationException", "An error occurred."),
            });
            assert.equal(connection.state, HubConnectionState.Connected);
            assert.equal(await call(connection, "Echo", "still here"), "still here");
        });

        test("ThrowHubException: a HubException's message reaches the client as ASP.NET words it", TEST, async (t) => {
            // ASP.NET (DefaultHubDispatcher + ErrorMessageHelper.BuildErrorMessage) always appends
            // "HubException: <message>" to the generic text for a HubException.
            const connection = await openCell(t);
            await assert.rejects(call(connection, "ThrowHubException", "boom: ÿ"), {
                message: INVOKE_ERROR("ThrowHubException", "HubException", "boom: ÿ"),
            });
            assert.equal(connection.state, HubConnectionState.Connected);
        });

        test("InvokeWithString calls the client's message handler (any casing)", TEST, async (t) => {
            const connection = buildConnection(`${server.url}/testhub`, base);
            t.after(() => stopQuietly(connection));
            const received = new Promise((resolve) => connection.on("mEssAge", resolve));
            await withTimeout(connection.start(), START_MS, "start()");
            await call(connection, "InvokeWithString", "你好 SignalR！");
            assert.equal(await withTimeout(received, CALL_MS, "Message"), "你好 SignalR！");
        });

        test("SendCustomObject calls the client's CustomObject handler with PascalCase properties", TEST, async (t) => {
            const connection = await openCell(t);
            const received = new Promise((resolve) => connection.on("CustomObject", resolve));
            await withTimeout(connection.send("SendCustomObject", { Name: "test", Value: 42 }), CALL_MS,
                "send(SendCustomObject)");
            assert.deepStrictEqual(await withTimeout(received, CALL_MS, "CustomObject"), { Name: "test", Value: 42 });
        });

        test("EchoComplexObject round-trips byte[], DateTime, Guid, int[] and string", TEST, async (t) => {
            const connection = await openCell(t);
            const value = complexObject(cell.protocol);
            assert.deepStrictEqual(await call(connection, "EchoComplexObject", value), value);
        });

        test("SendComplexObject returns the server's typed object", TEST, async (t) => {
            const connection = await openCell(t);
            assert.deepStrictEqual(await call(connection, "SendComplexObject"), sentComplexObject(cell.protocol));
        });

        test("Stream: items a, b, c then completion", TEST, async (t) => {
            const connection = await openCell(t);
            assert.deepStrictEqual(await collect(connection, "Stream"), { items: ["a", "b", "c"], error: undefined });
        });

        test("EmptyStream completes without items", TEST, async (t) => {
            const connection = await openCell(t);
            assert.deepStrictEqual(await collect(connection, "EmptyStream"), { items: [], error: undefined });
        });

        test("StreamThrowException fails the stream with ASP.NET's invocation error", TEST, async (t) => {
            const connection = await openCell(t);
            const { items, error } = await collect(connection, "StreamThrowException", "An error occurred.");
            assert.deepStrictEqual(items, []);
            assert.ok(error instanceof Error, `expected an Error, got ${error}`);
            assert.equal(error.message,
                INVOKE_ERROR("StreamThrowException", "InvalidOperationException", "An error occurred."));
        });

        test("StreamWithError: items, then an error in the middle of the stream", TEST, async (t) => {
            const connection = await openCell(t);
            const { items, error } = await collect(connection, "StreamWithError", "mid-stream failure");
            assert.deepStrictEqual(items, ["a", "b"]);
            assert.ok(error instanceof Error, `expected an Error, got ${error}`);
            assert.equal(error.message, STREAM_ERROR("InvalidOperationException", "mid-stream failure"));
            assert.equal(await call(connection, "Echo", "after"), "after");
        });

        test("disposing an InfiniteStream subscription cancels it on the server", TEST, async (t) => {
            // As in ASP.NET's "can stream server method and cancel stream", the subscription is
            // disposed at once: the CancelInvocation follows the StreamInvocation immediately. ASP.NET
            // always runs the hub method (which registers the StreamCanceled callback) before it reads
            // the next message, so StreamCanceled always arrives.
            const connection = await openCell(t);
            const canceled = new Promise((resolve) => connection.on("StreamCanceled", resolve));
            const subscription = connection.stream("InfiniteStream").subscribe({
                next: () => assert.fail("InfiniteStream sends no items"),
                complete: () => {},
                error: (error) => assert.fail(`InfiniteStream failed: ${error}`),
            });
            subscription.dispose();
            await withTimeout(canceled, CALL_MS, "StreamCanceled");
            assert.equal(connection.state, HubConnectionState.Connected);
            assert.equal(await call(connection, "Echo", "after cancel"), "after cancel");
            assert.deepStrictEqual((await collect(connection, "Stream")).items, ["a", "b", "c"]);
        });

        test("invoke() of a streaming method and stream() of a plain method are refused", TEST, async (t) => {
            const connection = await openCell(t);
            await assert.rejects(call(connection, "EmptyStream"), {
                message: "The client attempted to invoke the streaming 'EmptyStream' method with a non-streaming invocation.",
            });
            await assert.rejects(call(connection, "Stream"), {
                message: "The client attempted to invoke the streaming 'Stream' method with a non-streaming invocation.",
            });
            const { items, error } = await collect(connection, "Echo", "42");
            assert.deepStrictEqual(items, []);
            assert.equal(error?.message,
                "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.");
        });

        test("StreamingConcat concatenates a client-to-server stream (Subject)", TEST, async (t) => {
            const connection = await openCell(t);
            const subject = new signalR.Subject();
            const result = call(connection, "StreamingConcat", subject);
            subject.next("Hello ");
            subject.next("world");
            subject.next("!");
            subject.complete();
            assert.equal(await result, "Hello world!");
        });

        test("StreamingConcat fails as ASP.NET does when the client stream errors", TEST, async (t) => {
            const connection = await openCell(t);
            const subject = new signalR.Subject();
            const result = call(connection, "StreamingConcat", subject);
            subject.next("Hello ");
            subject.next("world");
            subject.next("!");
            subject.error(new Error("Something bad"));
            await assert.rejects(result, {
                message: INVOKE_ERROR("StreamingConcat", "HubException", "Something bad"),
            });
            assert.equal(await call(connection, "Echo", "after"), "after");
        });

        test("client result: GET /clientresult/{id} returns the handler's value", TEST, async (t) => {
            const connection = buildConnection(`${server.url}/testhub`, base);
            t.after(() => stopQuietly(connection));
            connection.on("Result", () => 42);
            await withTimeout(connection.start(), START_MS, "start()");
            assert.equal(await clientResult(connection.connectionId), "42");
            assert.equal(await call(connection, "Echo", "after"), "after");
        });

        test("client result: a handler that throws reports its error", TEST, async (t) => {
            const connection = buildConnection(`${server.url}/testhub`, base);
            t.after(() => stopQuietly(connection));
            connection.on("Result", () => {
                throw new Error("from callback");
            });
            await withTimeout(connection.start(), START_MS, "start()");
            assert.equal(await clientResult(connection.connectionId), "Error: from callback");
        });

        test("client result: without a handler the server gets \"Client didn't provide a result.\"", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(await clientResult(connection.connectionId), "Client didn't provide a result.");
            assert.equal(connection.state, HubConnectionState.Connected);
        });

        test("GetHeader sees the client's User-Agent", TEST, async (t) => {
            const connection = await openCell(t);
            const [name, value] = getUserAgentHeader();
            assert.equal(await call(connection, "GetHeader", name), value);
        });

        test("headers given to withUrl reach the server and override the library's", TEST, async (t) => {
            const [name] = getUserAgentHeader();
            const connection = await openCell(t, "/testhub", {
                headers: { [name]: "Custom Agent", "X-HEADER": "VALUE" },
            });
            assert.equal(await call(connection, "GetHeader", "X-HEADER"), "VALUE");
            assert.equal(await call(connection, "GetHeader", name), "Custom Agent");
            assert.equal(await call(connection, "GetHeader", "X-Not-Sent"), null);
        });

        test("cookies set by negotiate are sent back; expired ones are not", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(await call(connection, "GetCookie", "testCookie"), "testValue");
            assert.equal(await call(connection, "GetCookie", "testCookie2"), "testValue2");
            assert.equal(await call(connection, "GetCookie", "expiredCookie"), null);
        });

        test("groups: SendToGroup reaches the members only; LeaveGroup ends membership", TEST, async (t) => {
            const group = `group-${cell.transport}-${cell.protocol}-${Math.random()}`;
            const [a, b, outsider] = await Promise.all([openCell(t), openCell(t), openCell(t)]);
            const atA = record(a, "GroupMessage");
            const atB = record(b, "GroupMessage");
            const atOutsider = record(outsider, "GroupMessage");
            await call(a, "JoinGroup", group);
            await call(b, "JoinGroup", group);

            await call(outsider, "SendToGroup", group, "first ✓");
            assert.deepStrictEqual(await atA.until(1), [[group, "first ✓"]]);
            assert.deepStrictEqual(await atB.until(1), [[group, "first ✓"]]);
            await flush(outsider);
            assert.deepStrictEqual(atOutsider.calls, [], "a non-member received a group message");

            await call(b, "LeaveGroup", group);
            await call(a, "SendToGroup", group, "second");
            assert.deepStrictEqual(await atA.until(2), [[group, "first ✓"], [group, "second"]]);
            await flush(b);
            await flush(outsider);
            assert.deepStrictEqual(atB.calls, [[group, "first ✓"]], "a former member received a group message");
            assert.deepStrictEqual(atOutsider.calls, []);
        });

        test("/redirect: negotiate redirects to /testhub; GetNumRedirects counts redirects", TEST, async (t) => {
            const path = `/redirect?numRedirects=0&baseUrl=${encodeURIComponent(server.url)}`;
            const first = await openCell(t, path);
            const firstCount = await call(first, "GetNumRedirects");
            assert.equal(typeof firstCount, "number");
            assert.ok(firstCount > 0, `GetNumRedirects returned ${firstCount}`);
            assert.equal(await call(first, "GetCallerConnectionId"), first.connectionId);
            assert.equal(await call(first, "GetActiveTransportName"), cell.transport);
            assert.equal(await call(first, "Echo", MESSAGE), MESSAGE);

            const second = await openCell(t, path);
            assert.ok(await call(second, "GetNumRedirects") > firstCount);
        });

        test("/redirect: the redirect's accessToken is used for the target hub", TEST, async (t) => {
            const connection = await openCell(t, "/redirect?hub=authorizedhub");
            assert.equal(await call(connection, "GetUserIdentifier"), "testuser");
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
        });

        test("/bad-negotiate: start() fails with the negotiate response", TEST, async (t) => {
            const connection = buildConnection(`${server.url}/bad-negotiate`, base);
            t.after(() => stopQuietly(connection));
            await assert.rejects(withTimeout(connection.start(), START_MS, "start()"), { message: BAD_NEGOTIATE });
            assert.equal(connection.state, HubConnectionState.Disconnected);
        });
    });

    describe(`${cellName(cell)}: /authorizedhub`, () => {
        test("start() without a token fails with 401", TEST, async (t) => {
            const connection = buildConnection(`${server.url}/authorizedhub`, base);
            t.after(() => stopQuietly(connection));
            await assert.rejects(withTimeout(connection.start(), START_MS, "start()"), { message: UNAUTHORIZED });
            assert.equal(connection.state, HubConnectionState.Disconnected);
        });

        test("start() with an invalid token fails with 401", TEST, async (t) => {
            const connection = buildConnection(`${server.url}/authorizedhub`, {
                ...base,
                accessTokenFactory: () => "not.a.jwt",
            });
            t.after(() => stopQuietly(connection));
            await assert.rejects(withTimeout(connection.start(), START_MS, "start()"), { message: UNAUTHORIZED });
        });

        test("a token from /generateJwtToken connects; methods see the user", TEST, async (t) => {
            const token = await getJwtToken();
            const connection = await openCell(t, "/authorizedhub", { accessTokenFactory: () => token });
            const closeError = closed(connection);
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
            assert.equal(await call(connection, "GetUserIdentifier"), "testuser");
            assert.equal(await call(connection, "GetClaim", "sub"), "testuser");
            assert.equal(await call(connection, "GetCallerConnectionId"), connection.connectionId);
            await withTimeout(connection.stop(), CLOSE_MS, "stop()");
            assert.equal(await withTimeout(closeError, CLOSE_MS, "onclose"), undefined);
        });

        test("an async token factory works", TEST, async (t) => {
            const connection = await openCell(t, "/authorizedhub", { accessTokenFactory: () => getJwtToken() });
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
        });

        test("SendToUser reaches every connection of that user and nobody else", TEST, async (t) => {
            const suffix = `${cell.transport}-${cell.protocol}-${Math.random()}`;
            const alice = `alice-${suffix}`;
            const bob = `bob-${suffix}`;
            const [aliceToken, bobToken] = await Promise.all([getJwtToken(alice), getJwtToken(bob)]);
            const [alice1, alice2, bob1] = await Promise.all([
                openCell(t, "/authorizedhub", { accessTokenFactory: () => aliceToken }),
                openCell(t, "/authorizedhub", { accessTokenFactory: () => aliceToken }),
                openCell(t, "/authorizedhub", { accessTokenFactory: () => bobToken }),
            ]);
            const at1 = record(alice1, "UserMessage");
            const at2 = record(alice2, "UserMessage");
            const atBob = record(bob1, "UserMessage");
            assert.equal(await call(bob1, "GetUserIdentifier"), bob);

            await call(bob1, "SendToUser", alice, "hi alice ✓");
            assert.deepStrictEqual(await at1.until(1), [[bob, "hi alice ✓"]]);
            assert.deepStrictEqual(await at2.until(1), [[bob, "hi alice ✓"]]);
            // Nothing for bob: a message to himself sent afterwards arrives first.
            await call(alice1, "SendToUser", bob, "marker");
            assert.deepStrictEqual(await atBob.until(1), [[alice, "marker"]]);
        });
    });

    describe(`${cellName(cell)}: /echo (connection without the hub protocol)`, () => {
        test("sends and receives text", TEST, async (t) => {
            const connection = new HttpConnection(`${server.url}/echo`, {
                transport: HttpTransportType[cell.transport],
                logger: clientLogLevel,
            });
            const message = `Hello World! ${cell.protocol}`;
            const received = new Promise((resolve) => {
                connection.onreceive = (data) => resolve(data);
            });
            const closeError = new Promise((resolve) => {
                connection.onclose = (error) => resolve(error);
            });
            t.after(() => connection.stop().catch(() => {}));
            await withTimeout(connection.start(TransferFormat.Text), START_MS, "start()");
            await connection.send(message);
            assert.equal(await withTimeout(received, CALL_MS, "the echo"), message);
            await withTimeout(connection.stop(), CLOSE_MS, "stop()");
            assert.equal(await withTimeout(closeError, CLOSE_MS, "onclose"), undefined);
        });

        if (cell.protocol === "messagepack") {
            test("sends and receives binary data", TEST, async (t) => {
                const connection = new HttpConnection(`${server.url}/echo`, {
                    transport: HttpTransportType[cell.transport],
                    logger: clientLogLevel,
                });
                const chunks = [];
                let total = 0;
                const expected = new Uint8Array([0, 1, 2, 0xfe, 0xff, 0x80]);
                const received = new Promise((resolve) => {
                    connection.onreceive = (data) => {
                        const bytes = new Uint8Array(data);
                        chunks.push(bytes);
                        total += bytes.length;
                        if (total >= expected.length) {
                            resolve(Buffer.concat(chunks));
                        }
                    };
                });
                t.after(() => connection.stop().catch(() => {}));
                await withTimeout(connection.start(TransferFormat.Binary), START_MS, "start()");
                await connection.send(expected.buffer);
                assert.deepStrictEqual(new Uint8Array(await withTimeout(received, CALL_MS, "the echo")), expected);
            });
        }
    });
}

describe("/testhub-nowebsockets and transport choice", () => {
    for (const [protocol, expected] of [["json", "ServerSentEvents"], ["messagepack", "LongPolling"]]) {
        test(`${protocol === "json" ? "JSON" : "MessagePack"} with default transports uses ${expected}`, TEST, async (t) => {
            const connection = await open(t, "/testhub-nowebsockets", { protocol });
            assert.equal(await call(connection, "GetActiveTransportName"), expected);
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
            assert.deepStrictEqual((await collect(connection, "Stream")).items, ["a", "b", "c"]);
        });
    }

    test("a WebSockets-only client is refused", TEST, async (t) => {
        const connection = buildConnection(`${server.url}/testhub-nowebsockets`, {
            transport: HttpTransportType.WebSockets,
        });
        t.after(() => stopQuietly(connection));
        await assert.rejects(withTimeout(connection.start(), START_MS, "start()"));
        assert.equal(connection.state, HubConnectionState.Disconnected);
    });

    test("GET /clientresult/{id} also reaches /testhub-nowebsockets connections", TEST, async (t) => {
        const connection = buildConnection(`${server.url}/testhub-nowebsockets`, { protocol: "messagepack" });
        t.after(() => stopQuietly(connection));
        connection.on("Result", () => 7);
        await withTimeout(connection.start(), START_MS, "start()");
        assert.equal(await clientResult(connection.connectionId), "7");
    });

    for (const protocol of ["json", "messagepack"]) {
        test(`${protocol === "json" ? "JSON" : "MessagePack"} with default transports on /testhub uses WebSockets`, TEST, async (t) => {
            const connection = await open(t, "/testhub", { protocol });
            assert.equal(await call(connection, "GetActiveTransportName"), "WebSockets");
        });
    }
});

describe("skip negotiation", () => {
    for (const protocol of ["json", "messagepack"]) {
        test(`${protocol === "json" ? "JSON" : "MessagePack"} over WebSockets: no connectionId, methods work`, TEST, async (t) => {
            const connection = await open(t, "/testhub", {
                transport: HttpTransportType.WebSockets,
                skipNegotiation: true,
                protocol,
            });
            assert.equal(connection.connectionId, null);
            assert.equal(await call(connection, "GetActiveTransportName"), "WebSockets");
            assert.equal(await call(connection, "Echo", MESSAGE), MESSAGE);
            assert.deepStrictEqual((await collect(connection, "Stream")).items, ["a", "b", "c"]);
        });
    }
});

describe("helper endpoints", () => {
    test("GET /clientresult/{id} of an unknown connection reports it", TEST, async () => {
        assert.match(await clientResult("no-such-connection"), /no-such-connection/);
    });

    test("/echoredirect answers 307 to /echo with the query", TEST, async () => {
        const response = await fetch(`${server.url}/echoredirect/negotiate?negotiateVersion=1`, {
            method: "POST",
            redirect: "manual",
        });
        assert.equal(response.status, 307);
        assert.equal(response.headers.get("location"), "/echo/negotiate?negotiateVersion=1");
    });

    test("OPTIONS with an Origin answers 204 with CORS headers", TEST, async () => {
        const response = await fetch(`${server.url}/testhub/negotiate`, {
            method: "OPTIONS",
            headers: {
                Origin: "http://localhost:9999",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-requested-with",
            },
        });
        assert.equal(response.status, 204);
        assert.equal(response.headers.get("access-control-allow-origin"), "http://localhost:9999");
        assert.equal(response.headers.get("access-control-allow-credentials"), "true");
        assert.equal(response.headers.get("access-control-allow-methods"), "POST");
        assert.equal(response.headers.get("access-control-allow-headers"), "x-requested-with");
    });
});
