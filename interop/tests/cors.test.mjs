// CORS in a real browser: headless Debian Chromium (playwright-core) loads a page from one
// loopback origin, and the page's official @microsoft/signalr client connects to a hub served on
// another origin by the server crate's `cors` example (`cors_layer` + `allowed_origins`). The
// allowed origin connects on every transport with its cookie and access token; a page on an
// origin the hub does not list is refused by the browser (CORS) on negotiate, and by the server
// (403) on a WebSocket with skipped negotiation.
//
// Server: the `cors` example (lib/examples.mjs says where it is looked for). Chromium: $CHROMIUM_PATH or /usr/bin/chromium.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

import { startExample } from "../lib/examples.mjs";

const interopDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const dist = path.join(interopDir, "node_modules", "@microsoft");
const scripts = {
    "/signalr.js": path.join(dist, "signalr", "dist", "browser", "signalr.js"),
    "/msgpack.js": path.join(dist, "signalr-protocol-msgpack", "dist", "browser", "signalr-protocol-msgpack.js"),
};

/** A static page server on a free loopback port: the page's origin. */
async function pageOrigin() {
    const server = createServer((req, res) => {
        const file = scripts[req.url];
        if (file) {
            res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(file));
        } else {
            res.writeHead(200, { "content-type": "text/html" }).end(
                '<!doctype html><script src="/signalr.js"></script><script src="/msgpack.js"></script>');
        }
    });
    await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
    return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

let browser;
let allowed;
let refused;
let hub;

before(async () => {
    allowed = await pageOrigin();
    refused = await pageOrigin();
    hub = await startExample("cors", [allowed.origin]);
    browser = await chromium.launch({
        executablePath: chromiumPath,
        headless: true,
        args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
});

after(async () => {
    await browser?.close();
    await hub?.stop();
    allowed?.server.close();
    refused?.server.close();
});

/**
 * Opens a page of `origin` that sets a cookie (for the hub's host too: cookies ignore ports),
 * connects to the hub with `transport` and returns what happened, plus the console's messages.
 */
async function connectFrom(origin, { transport, protocol = "json", skipNegotiation = false }) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const consoleMessages = [];
    page.on("console", (message) => consoleMessages.push(message.text()));
    await page.goto(`${origin}/`);
    const result = await page.evaluate(async ({ hubUrl, transport, protocol, skipNegotiation }) => {
        document.cookie = "session=ann; path=/";
        const builder = new signalR.HubConnectionBuilder()
            .withUrl(hubUrl, {
                transport: signalR.HttpTransportType[transport],
                skipNegotiation,
                accessTokenFactory: () => "token-1",
            })
            .configureLogging(signalR.LogLevel.None);
        if (protocol === "messagepack") builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
        const connection = builder.build();
        try {
            await connection.start();
            const who = await connection.invoke("Whoami");
            const echo = await connection.invoke("Echo", { any: ["json", 1] });
            await connection.stop();
            return { ok: true, who, echo };
        } catch (error) {
            return { ok: false, error: String(error) };
        }
    }, { hubUrl: `${hub.url}/chat`, transport, protocol, skipNegotiation });
    await context.close();
    return { ...result, consoleMessages };
}

const CASES = [
    { transport: "WebSockets" },
    { transport: "WebSockets", skipNegotiation: true },
    { transport: "ServerSentEvents" },
    { transport: "LongPolling" },
    { transport: "LongPolling", protocol: "messagepack" },
];

for (const c of CASES) {
    const name = `${c.transport}${c.skipNegotiation ? " (skip negotiation)" : ""}, ${c.protocol ?? "json"}`;

    test(`an allowed origin connects with credentials: ${name}`, async () => {
        const result = await connectFrom(allowed.origin, c);
        assert.equal(result.ok, true, `${result.error}\n${result.consoleMessages.join("\n")}`);
        assert.deepEqual(result.who, { cookie: "ann", token: "token-1", transport: c.transport });
        assert.deepEqual(result.echo, { any: ["json", 1] });
    });

    test(`an origin the hub does not list is refused: ${name}`, async () => {
        const result = await connectFrom(refused.origin, c);
        assert.equal(result.ok, false, "the connection must fail");
        if (c.skipNegotiation) {
            // No CORS on WebSockets: the server's allowed_origins answers the upgrade with 403.
            assert.match(result.error, /WebSocket failed to connect/);
        } else {
            assert.match(result.error, /Failed to complete negotiation with the server: TypeError: Failed to fetch/);
            const blocked = result.consoleMessages.filter((m) =>
                m.includes(`from origin '${refused.origin}' has been blocked by CORS policy`));
            assert.ok(blocked.length > 0, `Chromium reports the CORS refusal:\n${result.consoleMessages.join("\n")}`);
        }
    });
}
