// Transport × protocol interop matrix: the official @microsoft/signalr client (10.0.11)
// against the Rust chat-server.
//
// Two server processes are started for the whole file and reused by every cell:
// a default one and one with --detailed-errors.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { startServer } from "../lib/server.mjs";
import {
    RecordingHttpClient,
    buildConnection,
    closed,
    signalR,
    stopQuietly,
    waitFor,
    withTimeout,
} from "../lib/client.mjs";

const { HttpTransportType, HubConnectionState } = signalR;

const TEST = { timeout: 20_000 };
const START_MS = 10_000;
const CALL_MS = 10_000;
const CLOSE_MS = 10_000;

const NON_ASCII = "héllo wörld ✓ 日本語 🚀";

const COMPLEX = {
    text: NON_ASCII,
    int: 42,
    negative: -7,
    large: 1234567890123,
    float: 0.1,
    yes: true,
    no: false,
    nothing: null,
    list: [1, "two", { three: 3 }, [4, [5, "six"]], null, false],
    nested: { deeper: { deepest: "✓ 🚀", empty: {}, emptyList: [] } },
    "key with spaces ✓": "value",
};

const TYPED = {
    name: "widget ✓ 日本語",
    count: 3,
    tags: ["alpha", "béta", "🚀"],
    nested: { flag: true, ratio: 0.25 },
};

const SERVER_ERROR = (method) => `Failed to invoke '${method}' due to an error on the server.`;
const NO_SUCH_METHOD_DETAILED =
    "Failed to invoke 'NoSuchMethod' due to an error on the server. HubException: Method does not exist.";
const TOO_LARGE_DEFAULT = "Server returned an error on close: Connection closed with an error.";
const TOO_LARGE_DETAILED = "Server returned an error on close: Connection closed with an error. " +
    "InvalidDataException: The maximum message size of 32768B was exceeded. " +
    "The message size can be configured in AddHubOptions.";

const servers = {};

before(async () => {
    servers.default = await startServer();
    servers.detailed = await startServer(["--detailed-errors"]);
});

after(async () => {
    for (const server of Object.values(servers)) {
        if (process.env.INTEROP_SERVER_LOGS) {
            process.stderr.write(`--- server ${server.args.join(" ")} stderr ---\n${server.stderr()}\n`);
        }
        await server.stop();
    }
});

const cells = [
    { transport: "WebSockets", protocol: "json" },
    { transport: "WebSockets", protocol: "messagepack" },
    { transport: "ServerSentEvents", protocol: "json" },
    { transport: "LongPolling", protocol: "json" },
    { transport: "LongPolling", protocol: "messagepack" },
    { transport: "WebSockets", protocol: "json", skipNegotiation: true },
    { transport: "WebSockets", protocol: "messagepack", skipNegotiation: true },
];

function cellName(cell) {
    const protocol = cell.protocol === "messagepack" ? "MessagePack" : "JSON";
    return `${cell.transport}${cell.skipNegotiation ? " (skipNegotiation)" : ""} × ${protocol}`;
}

/**
 * Builds and starts a connection for a test; it is stopped when the test ends.
 * @param {import("node:test").TestContext} t
 */
async function open(t, options = {}) {
    const {
        server = servers.default,
        path = "/chat",
        ...connectionOptions
    } = options;
    const connection = buildConnection(`${server.url}${path}`, connectionOptions);
    t.after(() => stopQuietly(connection));
    await withTimeout(connection.start(), START_MS, `start() on ${path}`);
    return connection;
}

function call(connection, method, ...args) {
    return withTimeout(connection.invoke(method, ...args), CALL_MS, `invoke("${method}")`);
}

function cellOptions(cell, extra = {}) {
    return {
        transport: HttpTransportType[cell.transport],
        skipNegotiation: cell.skipNegotiation === true,
        protocol: cell.protocol,
        ...extra,
    };
}

for (const cell of cells) {
    describe(cellName(cell), () => {
        const openCell = (t, extra) => open(t, cellOptions(cell, extra));

        test("connects with the requested transport", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(connection.state, HubConnectionState.Connected);
            assert.equal(await call(connection, "GetActiveTransportName"), cell.transport);

            const id = await call(connection, "GetConnectionId");
            assert.equal(typeof id, "string");
            assert.ok(id.length > 0, "connection id must not be empty");
            if (!cell.skipNegotiation) {
                assert.equal(id, connection.connectionId);
            }
        });

        test("echoes a string with non-ASCII text", TEST, async (t) => {
            const connection = await openCell(t);
            assert.equal(await call(connection, "Echo", NON_ASCII), NON_ASCII);
        });

        test("echoes a complex nested value through Echo", TEST, async (t) => {
            const connection = await openCell(t);
            assert.deepStrictEqual(await call(connection, "Echo", COMPLEX), COMPLEX);
            assert.deepStrictEqual(await call(connection, "Echo", [1, "x", [true]]), [1, "x", [true]]);
        });

        test("round-trips a typed object through EchoObject", TEST, async (t) => {
            const connection = await openCell(t);
            assert.deepStrictEqual(await call(connection, "EchoObject", TYPED), TYPED);
        });

        test("EchoObject rejects a missing field or a wrong type", TEST, async (t) => {
            const connection = await openCell(t);
            const { count, ...missingCount } = TYPED;
            assert.equal(count, 3);
            await assert.rejects(call(connection, "EchoObject", missingCount),
                { message: SERVER_ERROR("EchoObject") });
            await assert.rejects(call(connection, "EchoObject", { ...TYPED, count: "three" }),
                { message: SERVER_ERROR("EchoObject") });
            // The connection survives a failed invocation.
            assert.deepStrictEqual(await call(connection, "EchoObject", TYPED), TYPED);
        });

        test("a message just under the size limit passes (30000 chars)", TEST, async (t) => {
            const connection = await openCell(t);
            const value = "a".repeat(30_000);
            assert.equal(await call(connection, "Echo", value), value);
            assert.equal(connection.state, HubConnectionState.Connected);
        });

        for (const [label, serverKey, expected] of [
            ["default server", "default", TOO_LARGE_DEFAULT],
            ["--detailed-errors server", "detailed", TOO_LARGE_DETAILED],
        ]) {
            test(`a message over the size limit (40000 chars) closes the connection (${label})`, TEST, async (t) => {
                const connection = await openCell(t, { server: servers[serverKey] });
                const closeError = closed(connection);
                await assert.rejects(call(connection, "Echo", "b".repeat(40_000)));
                const error = await withTimeout(closeError, CLOSE_MS, "onclose");
                assert.ok(error instanceof Error, `onclose should get an Error, got ${error}`);
                assert.equal(error.message, expected);
                assert.equal(connection.state, HubConnectionState.Disconnected);
            });
        }

        for (const [label, serverKey, expected] of [
            ["default server", "default", SERVER_ERROR("NoSuchMethod")],
            ["--detailed-errors server", "detailed", NO_SUCH_METHOD_DETAILED],
        ]) {
            test(`an unknown method fails (${label})`, TEST, async (t) => {
                const connection = await openCell(t, { server: servers[serverKey] });
                await assert.rejects(call(connection, "NoSuchMethod"), (error) => {
                    assert.ok(error instanceof Error);
                    assert.equal(error.message, expected);
                    return true;
                });
                assert.equal(connection.state, HubConnectionState.Connected);
            });
        }

        test("Throw rejects with the thrown message behind ASP.NET's HubException prefix", TEST, async (t) => {
            const connection = await openCell(t);
            await assert.rejects(call(connection, "Throw", "boom: ÿ"), (error) => {
                assert.ok(error instanceof Error);
                assert.equal(
                    error.message,
                    "An unexpected error occurred invoking 'Throw' on the server. HubException: boom: ÿ",
                );
                return true;
            });
            assert.equal(connection.state, HubConnectionState.Connected);
        });

        test("a server-initiated close reaches onclose with the error", TEST, async (t) => {
            const connection = await openCell(t);
            const closeError = closed(connection);
            await withTimeout(connection.send("CloseWithError", "bye now", false), CALL_MS, "send(CloseWithError)");
            const error = await withTimeout(closeError, CLOSE_MS, "onclose");
            assert.ok(error instanceof Error, `onclose should get an Error, got ${error}`);
            assert.equal(error.message, "Server returned an error on close: bye now");
            assert.equal(connection.state, HubConnectionState.Disconnected);
        });

        test("stop() ends the connection cleanly", TEST, async (t) => {
            const http = cell.transport === "LongPolling" ? new RecordingHttpClient() : undefined;
            const connection = await openCell(t, { httpClient: http });
            const closeError = closed(connection);
            assert.equal(await call(connection, "Echo", "before stop"), "before stop");

            let pollsAtStop = [];
            if (http) {
                await waitFor(() => http.requests.some((r) => r.method === "GET" && !r.ended), 5_000,
                    "a long poll in flight");
                pollsAtStop = http.requests.filter((r) => r.method === "GET" && !r.ended);
                // "In flight" is the client's view: give the poll time to reach the server, so
                // that it is open there when stop() sends the DELETE (a poll that arrives after
                // the DELETE is answered 404, as by ASP.NET).
                await new Promise((resolve) => setTimeout(resolve, 200));
            }

            await withTimeout(connection.stop(), CLOSE_MS, "stop()");
            assert.equal(await withTimeout(closeError, CLOSE_MS, "onclose"), undefined);
            assert.equal(connection.state, HubConnectionState.Disconnected);

            if (http) {
                // The poll that was open when stop() was called is kept open on the wire by the
                // recording client; the server must end it once the connection is deleted.
                await http.drain(CLOSE_MS);
                const summary = http.summary();
                t.diagnostic(`LongPolling requests:\n${summary}`);
                const deletes = http.requests.filter((r) => r.method === "DELETE");
                assert.ok(deletes.some((r) => r.statusCode === 202),
                    `expected a DELETE answered with 202, got:\n${summary}`);
                assert.ok(pollsAtStop.some((r) => r.statusCode === 204),
                    `expected the GET poll open at stop() to end with 204, got:\n${summary}`);
            }
        });

        test("chat: SendMessage reaches every connection's ReceiveMessage", TEST, async (t) => {
            const sender = await openCell(t);
            const receiver = await openCell(t);
            const received = (connection) => new Promise((resolve) => {
                connection.on("ReceiveMessage", (...args) => resolve(args));
            });
            const atReceiver = received(receiver);
            const atSender = received(sender);

            await call(sender, "SendMessage", "ann", "hi ✓");
            assert.deepStrictEqual(await withTimeout(atReceiver, CALL_MS, "ReceiveMessage at receiver"),
                ["ann", "hi ✓"]);
            assert.deepStrictEqual(await withTimeout(atSender, CALL_MS, "ReceiveMessage at sender"),
                ["ann", "hi ✓"]);
        });
    });
}

describe("client-side refusal and automatic transport fallback", () => {
    test("MessagePack over ServerSentEvents is refused by the client", TEST, async (t) => {
        const connection = buildConnection(`${servers.default.url}/chat`, {
            transport: HttpTransportType.ServerSentEvents,
            protocol: "messagepack",
        });
        t.after(() => stopQuietly(connection));
        await assert.rejects(withTimeout(connection.start(), START_MS, "start()"), (error) => {
            assert.ok(error instanceof Error);
            t.diagnostic(`start() rejected: ${error.message}`);
            return true;
        });
        assert.equal(connection.state, HubConnectionState.Disconnected);
    });

    test("a WebSockets-only client is refused by /chat-nowebsockets", TEST, async (t) => {
        const connection = buildConnection(`${servers.default.url}/chat-nowebsockets`, {
            transport: HttpTransportType.WebSockets,
        });
        t.after(() => stopQuietly(connection));
        await assert.rejects(withTimeout(connection.start(), START_MS, "start()"), (error) => {
            assert.ok(error instanceof Error);
            t.diagnostic(`start() rejected: ${error.message}`);
            return true;
        });
    });

    for (const [protocol, path, expected] of [
        ["messagepack", "/chat-nowebsockets", "LongPolling"],
        ["json", "/chat-nowebsockets", "ServerSentEvents"],
        ["json", "/chat", "WebSockets"],
        ["messagepack", "/chat", "WebSockets"],
    ]) {
        const name = protocol === "messagepack" ? "MessagePack" : "JSON";
        test(`${name} with default transports on ${path} uses ${expected}`, TEST, async (t) => {
            const connection = await open(t, { path, protocol });
            assert.equal(await call(connection, "GetActiveTransportName"), expected);
            assert.equal(await call(connection, "Echo", NON_ASCII), NON_ASCII);
        });
    }
});

describe("skip negotiation", () => {
    for (const protocol of ["json", "messagepack"]) {
        const name = protocol === "messagepack" ? "MessagePack" : "JSON";
        test(`${name} over WebSockets with skipNegotiation on /chat echoes`, TEST, async (t) => {
            const connection = await open(t, {
                transport: HttpTransportType.WebSockets,
                skipNegotiation: true,
                protocol,
            });
            assert.equal(connection.state, HubConnectionState.Connected);
            assert.equal(await call(connection, "GetActiveTransportName"), "WebSockets");
            assert.equal(await call(connection, "Echo", NON_ASCII), NON_ASCII);
            assert.deepStrictEqual(await call(connection, "Echo", COMPLEX), COMPLEX);
        });
    }
});
