// The test page's own origin: a small HTTP server that serves the page, jQuery and
// jquery.signalR from node_modules, and forwards everything under /signalr and /broadcast to the
// server under test (plain HTTP with streamed bodies, so SSE and long polls pass unbuffered, and
// WebSocket upgrades as raw TCP). Serving both from one origin keeps Chromium from blocking the
// page's ws://127.0.0.1 connections.
//
// It can also play a network failure: `drop()` resets every forwarded connection (both sides),
// `block()` refuses new forwarded connections until `unblock()`.
//
// Every forwarded request is remembered (`requests`: method, URL, whether it was an upgrade);
// with $CLASSIC_TRACE set to a file name, each is also appended there as a JSON line with its
// request headers, which shows exactly what the client sends.

import { appendFileSync, readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";

import { packageDir } from "./server.mjs";

const FILES = {
    "/lib/jquery.js": path.join(packageDir, "node_modules", "jquery", "dist", "jquery.js"),
    "/lib/jquery.signalR.js": path.join(packageDir, "node_modules", "signalr", "jquery.signalR.js"),
    "/harness.js": path.join(packageDir, "page", "harness.js"),
};
const FORWARDED = /^\/(signalr|broadcast)(\/|\?|$)/i;
// Request headers that belong to one hop only.
const HOP_BY_HOP = new Set([
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
]);
const MAX_RECORDED = 10_000;
const MAX_HEAD = 64 * 1024;

function page(withHubs) {
    return `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>classic SignalR interop${withHubs ? " (generated proxy)" : ""}</title>
<script src="/lib/jquery.js"></script>
<script src="/lib/jquery.signalR.js"></script>
${withHubs ? '<script src="/signalr/hubs"></script>\n' : ""}<script src="/harness.js"></script>
</head>
<body><h1>classic SignalR interop</h1></body>
</html>
`;
}

function reset(socket) {
    if (socket.destroyed) return;
    if (typeof socket.resetAndDestroy === "function" && socket.readyState !== "opening") {
        socket.resetAndDestroy();
    } else {
        socket.destroy();
    }
}

/**
 * Starts the front door for `upstream` (the server under test's base URL).
 * @returns {Promise<{ url: string,
 *   requests: Array<{ at: number, method: string, url: string, upgrade: boolean }>,
 *   refused: () => number, drop: () => number, block: () => void, unblock: () => void,
 *   close: () => Promise<void> }>}
 */
export async function startFrontDoor(upstream) {
    const target = new URL(upstream);
    const upstreamHost = target.hostname;
    const upstreamPort = Number(target.port || 80);
    const files = Object.fromEntries(Object.entries(FILES).map(([url, file]) => [url, readFileSync(file)]));
    const forwarded = new Set(); // every socket that carries forwarded traffic, either side
    const requests = [];
    const trace = process.env.CLASSIC_TRACE;
    let blocked = false;
    let refused = 0;

    const track = (socket) => {
        if (forwarded.has(socket)) return;
        forwarded.add(socket);
        socket.once("close", () => forwarded.delete(socket));
    };
    const remember = (req, upgrade) => {
        const entry = { at: Date.now(), method: req.method, url: req.url, upgrade };
        if (requests.length < MAX_RECORDED) requests.push(entry);
        if (trace) appendFileSync(trace, `${JSON.stringify({ ...entry, headers: req.rawHeaders })}\n`);
    };

    const server = http.createServer((req, res) => {
        const pathname = new URL(req.url, "http://x").pathname;
        if (FORWARDED.test(req.url)) {
            forward(req, res);
        } else if (pathname === "/" || pathname === "/index.html") {
            const withHubs = new URL(req.url, "http://x").searchParams.get("hubs") === "1";
            res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
            res.end(page(withHubs));
        } else if (files[pathname]) {
            res.writeHead(200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" });
            res.end(files[pathname]);
        } else {
            res.writeHead(404, { "content-type": "text/plain" });
            res.end("not found");
        }
    });

    function forward(req, res) {
        if (blocked) {
            refused += 1;
            reset(req.socket);
            return;
        }
        remember(req, false);
        track(req.socket);
        const headers = {};
        for (const [name, value] of Object.entries(req.headers)) {
            if (!HOP_BY_HOP.has(name)) headers[name] = value;
        }
        headers.host = target.host;
        const upstreamReq = http.request({
            host: upstreamHost,
            port: upstreamPort,
            method: req.method,
            path: req.url,
            headers,
            agent: false,
        });
        upstreamReq.on("socket", track);
        upstreamReq.on("response", (upstreamRes) => {
            const responseHeaders = {};
            for (const [name, value] of Object.entries(upstreamRes.headers)) {
                if (!HOP_BY_HOP.has(name)) responseHeaders[name] = value;
            }
            res.writeHead(upstreamRes.statusCode, upstreamRes.statusMessage, responseHeaders);
            res.flushHeaders();
            upstreamRes.pipe(res); // chunk by chunk, as it arrives
            upstreamRes.on("error", () => reset(req.socket));
            upstreamRes.on("aborted", () => reset(req.socket));
        });
        upstreamReq.on("error", () => reset(req.socket));
        req.pipe(upstreamReq);
        // The browser went away (or we dropped it): so does the forwarded request.
        res.on("close", () => {
            if (!res.writableFinished) upstreamReq.destroy();
        });
    }

    server.on("upgrade", (req, socket, head) => {
        if (!FORWARDED.test(req.url) || blocked) {
            if (blocked) refused += 1;
            reset(socket);
            return;
        }
        remember(req, true);
        track(socket);
        const upstreamSocket = net.connect(upstreamPort, upstreamHost);
        track(upstreamSocket);
        upstreamSocket.setNoDelay(true);
        socket.setNoDelay(true);
        let request = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
        for (let i = 0; i < req.rawHeaders.length; i += 2) {
            const name = req.rawHeaders[i];
            const value = name.toLowerCase() === "host" ? target.host : req.rawHeaders[i + 1];
            request += `${name}: ${value}\r\n`;
        }
        request += "\r\n";
        if (request.length > MAX_HEAD) {
            reset(socket);
            reset(upstreamSocket);
            return;
        }
        upstreamSocket.on("connect", () => {
            upstreamSocket.write(request);
            if (head.length) upstreamSocket.write(head);
            socket.pipe(upstreamSocket);
            upstreamSocket.pipe(socket);
        });
        const both = () => {
            reset(socket);
            reset(upstreamSocket);
        };
        socket.on("error", both);
        upstreamSocket.on("error", both);
        socket.on("close", () => upstreamSocket.destroy());
        upstreamSocket.on("close", () => socket.destroy());
    });
    server.on("clientError", (_err, socket) => reset(socket));

    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address();
    return {
        url: `http://127.0.0.1:${port}`,
        requests,
        /** How many forwarded connections were refused while blocked, so far. */
        refused: () => refused,
        /** Resets every forwarded connection; returns how many sockets it cut. */
        drop() {
            const sockets = [...forwarded];
            for (const socket of sockets) reset(socket);
            return sockets.length;
        },
        block() {
            blocked = true;
        },
        unblock() {
            blocked = false;
        },
        async close() {
            for (const socket of forwarded) reset(socket);
            server.closeAllConnections?.();
            await new Promise((resolve) => server.close(() => resolve()));
        },
    };
}
