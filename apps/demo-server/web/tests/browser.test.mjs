// The demo pages in real browsers: headless Debian Chromium driven by playwright-core, against
// the Rust demo-server started on a free port, with the official @microsoft/signalr client and
// the classic jQuery SignalR 2.4 client (often both on one page set). Each test saves screenshots
// under test-output/demo-server/ (run-tests.mjs prints their paths at the end).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import {
    assertClean, clearScreenshots, launchBrowser, newPage, screenshot,
} from "./lib/browser.mjs";
import { NO_REDIS, startRedis } from "./lib/redis.mjs";
import { startServer } from "./lib/server.mjs";

let browser;

before(async () => {
    clearScreenshots();
    browser = await launchBrowser();
});

after(async () => {
    await browser?.close();
});

/** Starts a server for one test and stops it (and the test's browser contexts) afterwards. */
async function serverFor(t, options) {
    const server = await startServer(options);
    t.after(() => server.stop());
    return server;
}

async function closeAll(pages) {
    await Promise.all(pages.map((p) => p.context().close()));
}

/** jquery.signalR's names of the transports the pages offer. */
const JQUERY_TRANSPORTS = {
    WebSockets: "webSockets", ServerSentEvents: "serverSentEvents", LongPolling: "longPolling",
};

/**
 * Opens the chat page, picks client, transport, protocol, name and room in the page's controls,
 * connects and waits until the room is joined. `client`: "core" (the official client) or
 * "classic" (jQuery SignalR 2.4, whose protocol the server reports as "classic").
 */
async function openChat(url, { name, room, transport, protocol = "json", client = "core" }) {
    const page = await newPage(browser, `${url}/chat`);
    await page.fill("#name", name);
    await page.selectOption("#room", room);
    await page.selectOption("#client", client);
    await page.selectOption("#transport", transport);
    if (client === "core") await page.selectOption("#protocol", protocol);
    await page.click("#connect");
    await page.waitForFunction((r) => document.body.dataset.room === r, room);
    const info = page.locator("#transport-info");
    const expected = client === "classic" ? "classic" : protocol;
    assert.equal(await info.getAttribute("data-client"), client, `${name}'s client`);
    assert.equal(await info.getAttribute("data-protocol"), expected, `${name}'s protocol`);
    if (transport !== "auto") {
        assert.equal(await info.getAttribute("data-transport"), transport, `${name}'s transport`);
    }
    if (client === "classic") {
        const used = await page.evaluate(() => jQuery.connection.hub.transport.name);
        if (transport !== "auto") assert.equal(used, JQUERY_TRANSPORTS[transport], `${name}'s jQuery transport`);
    }
    return page;
}

/** The connection id the server reported to the page (Whoami). */
async function connectionId(page) {
    return (await page.textContent("#transport-info")).split(" · ")[2];
}

/** Sends a chat message (to the room, or privately when `to` is given) with the page's form. */
async function say(page, text, to = "") {
    await page.fill("#to", to);
    await page.fill("#message", text);
    await page.click("#send");
    await page.waitForFunction(() => document.getElementById("message").value === "");
}

/** Waits until a message list item containing `text` shows on `page`. */
async function sees(page, text, selector = "#messages li") {
    await page.locator(selector, { hasText: text }).first().waitFor({ timeout: 10_000 });
}

async function countOf(page, text, selector = "#messages li") {
    return page.locator(selector, { hasText: text }).count();
}

test("index: links to every demo; both clients come from the server's node_modules", async (t) => {
    const { url } = await serverFor(t);
    const page = await newPage(browser, `${url}/`);
    t.after(() => closeAll([page]));
    const links = await page.locator("main a.card").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    assert.deepEqual(links, ["/chat", "/stocks", "/shape", "/status"]);
    for (const file of ["signalr.min.js", "signalr-protocol-msgpack.min.js", "jquery.min.js", "jquery.signalR.min.js"]) {
        const response = await fetch(`${url}/lib/${file}`);
        assert.equal(response.status, 200, file);
        assert.match(response.headers.get("content-type"), /javascript/);
        assert.ok((await response.text()).length > 10_000, `${file} is the real bundle`);
    }
    assert.equal((await fetch(`${url}/lib/package.json`)).status, 404);
    // The classic client's generated proxy names every demo hub.
    const proxy = await (await fetch(`${url}/signalr/hubs`)).text();
    for (const hub of ["chatHub", "stockTickerHub", "moveShapeHub", "statusHub"]) {
        assert.ok(proxy.includes(`proxies["${hub}"]`), `/signalr/hubs has ${hub}`);
    }
    assertClean(assert, page);
    await screenshot(page, "index");
});

test("chat: two pages talk in a room, a third room hears nothing, a private message reaches only its user", async (t) => {
    const { url } = await serverFor(t);
    const ann = await openChat(url, { name: "ann", room: "lobby", transport: "WebSockets" });
    const bob = await openChat(url, {
        name: "bob", room: "lobby", transport: "LongPolling", protocol: "messagepack",
    });
    const cid = await openChat(url, { name: "cid", room: "rust", transport: "ServerSentEvents" });
    t.after(() => closeAll([ann, bob, cid]));

    await sees(ann, "bob joined #lobby");
    await say(ann, "hello from ann");
    await say(bob, "hi ann, bob here (long polling + MessagePack)");
    await say(cid, "anyone in rust?");
    for (const page of [ann, bob]) {
        await sees(page, "hello from ann", "#messages li.msg");
        await sees(page, "hi ann, bob here", "#messages li.msg");
    }
    await sees(cid, "anyone in rust?", "#messages li.msg");

    await say(ann, "psst cid, this is private", "cid");
    await sees(cid, "ann → you (private): psst cid, this is private", "#messages li.private");
    await sees(ann, "you → cid (private): psst cid", "#messages li.private");
    await say(bob, "last word in the lobby");
    await sees(ann, "last word in the lobby");
    await sleep(300);

    assert.equal(await countOf(cid, "hello from ann"), 0, "another room hears nothing");
    assert.equal(await countOf(cid, "bob here"), 0, "another room hears nothing");
    assert.equal(await countOf(cid, "joined #lobby"), 0, "no join notices from another room");
    assert.equal(await countOf(ann, "anyone in rust?"), 0);
    assert.equal(await countOf(bob, "anyone in rust?"), 0);
    assert.equal(await countOf(bob, "psst"), 0, "the private message reached only cid");
    assert.equal(await countOf(cid, "psst"), 1, "exactly once");
    assert.equal(await countOf(ann, "hello from ann", "#messages li.msg"), 1);
    assert.equal(await countOf(bob, "hello from ann", "#messages li.msg"), 1);
    assert.deepEqual(await ann.locator("#members li").allTextContents(), ["ann", "bob"]);
    assertClean(assert, ann, bob, cid);

    await screenshot(ann, "chat-ann-websockets-json");
    await screenshot(bob, "chat-bob-longpolling-messagepack");
    await screenshot(cid, "chat-cid-sse-other-room");
});

test("chat, mixed clients: a Core page and jQuery pages share rooms, private messages, joins and leaves", async (t) => {
    const { url } = await serverFor(t);
    const ann = await openChat(url, { name: "ann", room: "lobby", transport: "WebSockets" });
    const jo = await openChat(url, { name: "jo", room: "lobby", transport: "WebSockets", client: "classic" });
    const kim = await openChat(url, { name: "kim", room: "rust", transport: "LongPolling", client: "classic" });
    const pages = [ann, jo, kim];
    t.after(() => closeAll(pages));

    await sees(ann, "jo joined #lobby");
    assert.deepEqual(await jo.locator("#members li").allTextContents(), ["ann", "jo"], "jo's Join answer");
    await say(ann, "hello jQuery, this is the Core client");
    await say(jo, "hello Core, jQuery here");
    for (const page of [ann, jo]) {
        await sees(page, "ann: hello jQuery, this is the Core client", "#messages li.msg");
        await sees(page, "jo: hello Core, jQuery here", "#messages li.msg");
    }
    await say(kim, "long polling in rust");
    await sees(kim, "kim: long polling in rust", "#messages li.msg");

    // Private messages by name, across rooms and clients, all three ways.
    await say(ann, "core to classic, privately", "kim");
    await sees(kim, "ann → you (private): core to classic, privately", "#messages li.private");
    await say(kim, "classic to core, privately", "ann");
    await sees(ann, "kim → you (private): classic to core, privately", "#messages li.private");
    await say(jo, "classic to classic, privately", "kim");
    await sees(kim, "jo → you (private): classic to classic, privately", "#messages li.private");

    // A hub error reads the same on both clients.
    for (const page of [ann, jo]) {
        await page.fill("#to", "nobody");
        await page.fill("#message", "anyone?");
        await page.click("#send");
        await page.waitForFunction(() => document.getElementById("chat-error").textContent !== "");
        assert.equal(await page.textContent("#chat-error"), "Nobody called 'nobody' is online.");
    }
    await jo.fill("#to", "");

    // jo switches rooms: the lobby sees the leave, rust the join; the member lists follow.
    await jo.selectOption("#room", "rust");
    await jo.waitForFunction(() => document.body.dataset.room === "rust");
    await sees(ann, "jo left #lobby");
    await sees(kim, "jo joined #rust");
    await ann.waitForFunction(() => [...document.querySelectorAll("#members li")].map((li) => li.textContent).join() === "ann");
    assert.deepEqual(await jo.locator("#members li").allTextContents(), ["jo", "kim"]);
    await say(jo, "now in rust");
    await sees(kim, "jo: now in rust", "#messages li.msg");

    // Disconnecting a jQuery page (its /abort) is a leave at once.
    await kim.click("#disconnect");
    await kim.waitForFunction(() => document.body.dataset.state === "disconnected");
    await sees(jo, "kim left #rust");
    await sleep(300);

    assert.equal(await countOf(ann, "now in rust"), 0, "the lobby does not hear rust");
    assert.equal(await countOf(kim, "hello Core"), 0, "rust did not hear the lobby");
    // Each private message shows on the recipient's page ("→ you") and the sender's ("you →").
    assert.equal(await countOf(jo, "→ you (private)"), 0, "private messages reached only their user");
    assert.equal(await countOf(ann, "→ you (private)"), 1, "ann got kim's message only");
    assert.equal(await countOf(kim, "→ you (private)"), 2, "kim got ann's and jo's");
    assert.equal(await countOf(kim, "ann → you (private): core to classic", "#messages li.private"), 1, "exactly once");
    assert.equal(await countOf(jo, "you → kim (private): classic to classic", "#messages li.private"), 1);
    assert.equal(await countOf(ann, "hello Core, jQuery here", "#messages li.msg"), 1);
    assert.equal(await countOf(jo, "hello jQuery", "#messages li.msg"), 1);
    assertClean(assert, ...pages);
    await screenshot(ann, "chat-mixed-ann-core");
    await screenshot(jo, "chat-mixed-jo-jquery");
});

test("chat, jQuery on every transport: WebSockets, Server-Sent Events, long polling and auto, with Core pages", async (t) => {
    const { url } = await serverFor(t);
    const core = await openChat(url, {
        name: "core-mp", room: "dotnet", transport: "LongPolling", protocol: "messagepack",
    });
    const classic = [];
    for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling", "auto"]) {
        classic.push(await openChat(url, {
            name: `jq-${transport}`, room: "dotnet", transport, client: "classic",
        }));
    }
    const pages = [core, ...classic];
    t.after(() => closeAll(pages));
    assert.equal(await classic[3].evaluate(() => jQuery.connection.hub.transport.name), "webSockets",
        "auto negotiates WebSockets");
    for (const [i, page] of pages.entries()) await say(page, `roll call ${i}`);
    for (const page of pages) {
        for (let i = 0; i < pages.length; i++) await sees(page, `roll call ${i}`, "#messages li.msg");
    }
    await sleep(300);
    for (const page of pages) {
        for (let i = 0; i < pages.length; i++) {
            assert.equal(await countOf(page, `roll call ${i}`, "#messages li.msg"), 1, "each message once");
        }
    }
    assert.deepEqual(await core.locator("#members li").allTextContents(),
        ["core-mp", "jq-LongPolling", "jq-ServerSentEvents", "jq-WebSockets", "jq-auto"]);
    assertClean(assert, ...pages);
    await screenshot(classic[1], "chat-jquery-sse");
});

test("chat, jQuery reconnect: a dropped transport resumes the same connection, room kept, nothing lost", async (t) => {
    const { url } = await serverFor(t);
    const core = await openChat(url, { name: "lou", room: "random", transport: "WebSockets" });
    const pages = [core];
    t.after(() => closeAll(pages));
    for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
        const name = `jq-${transport}`;
        const page = await openChat(url, { name, room: "random", transport, client: "classic" });
        pages.push(page);
        const id = await connectionId(page);
        // The page's transport goes away under jquery.signalR, as on a network drop: the
        // WebSocket or the EventSource is closed, or the long poll aborted. jquery.signalR
        // reconnects after its reconnect delay (2 s, 3 s for long polling); the message is sent
        // in between, while the client has no transport.
        await page.evaluate(() => {
            const hub = jQuery.connection.hub;
            if (hub.socket) {
                hub.socket.close(); // jquery.signalR sees the close and reconnects
            } else {
                if (hub.eventSource) hub.eventSource.close();
                hub.transport.lostConnection(hub);
            }
        });
        await say(core, `sent while ${name} was away`);
        await sees(page, "connection lost: reconnecting");
        await sees(page, `you rejoined #random as ${name}`);
        await page.waitForFunction(() => document.body.dataset.state === "connected"
            && document.body.dataset.room === "random", null, { timeout: 20_000 });
        await sees(page, `sent while ${name} was away`, "#messages li.msg");
        assert.equal(await connectionId(page), id, `${name} kept its connection id`);
        assert.equal(await page.getAttribute("#transport-info", "data-transport"), transport);
        await say(page, `${name} is back`);
        await sees(core, `${name} is back`, "#messages li.msg");
        await sleep(200);
        assert.equal(await countOf(page, `sent while ${name} was away`, "#messages li.msg"), 1, "delivered once");
    }
    assertClean(assert, ...pages);
    await screenshot(pages[3], "chat-jquery-longpolling-reconnected");
});

test("stocks and move shape with the jQuery client beside the Core client", async (t) => {
    const { url } = await serverFor(t);
    const stocks = await newPage(browser, `${url}/stocks?client=classic&transport=ServerSentEvents`);
    const mover = await newPage(browser, `${url}/shape?client=classic&transport=LongPolling`);
    const watcher = await newPage(browser, `${url}/shape?transport=WebSockets`);
    const pages = [stocks, mover, watcher];
    t.after(() => closeAll(pages));
    await stocks.waitForFunction(() => document.body.dataset.market === "open");
    assert.equal(await stocks.getAttribute("#transport-info", "data-protocol"), "classic");
    await stocks.waitForFunction(() => Number(document.getElementById("updates").textContent) >= 5,
        null, { timeout: 15_000 });
    await stocks.click("#close");
    await stocks.waitForFunction(() => document.body.dataset.market === "closed");

    for (const page of [mover, watcher]) {
        await page.waitForFunction(() => document.body.dataset.state === "connected"
            && document.getElementById("shape").dataset.left !== undefined);
    }
    const box = await mover.locator("#shape").boundingBox();
    const start = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
    await mover.mouse.move(start.x, start.y);
    await mover.mouse.down();
    await mover.mouse.move(start.x + 200, start.y + 120, { steps: 20 });
    await mover.mouse.up();
    const moved = await mover.evaluate(() => {
        const s = document.getElementById("shape").dataset;
        return { left: Number(s.left), top: Number(s.top) };
    });
    assert.ok(moved.left > 180 && moved.top > 100, `the jQuery mover's shape moved (${JSON.stringify(moved)})`);
    await watcher.waitForFunction(({ left, top }) => {
        const s = document.getElementById("shape").dataset;
        return Number(s.left) === left && Number(s.top) === top;
    }, moved, { timeout: 10_000 });
    assertClean(assert, ...pages);
    await screenshot(stocks, "stocks-jquery-sse-closed");
});

test("stocks: the table updates by itself and stops when the market is closed", async (t) => {
    const { url } = await serverFor(t);
    const page = await newPage(browser, `${url}/stocks?protocol=messagepack`);
    t.after(() => closeAll([page]));
    await page.waitForFunction(() => document.body.dataset.market === "open");
    const prices = () => page.locator("#stocks tbody td.price").allTextContents();
    const updates = async () => Number(await page.textContent("#updates"));
    assert.equal((await prices()).length, 5);
    const first = await prices();

    // No user action: the server's background task broadcasts price changes.
    await page.waitForFunction(() => Number(document.getElementById("updates").textContent) >= 8,
        null, { timeout: 15_000 });
    assert.notDeepEqual(await prices(), first, "prices moved");

    await page.click("#close");
    await page.waitForFunction(() => document.body.dataset.market === "closed");
    await sleep(300);
    const closedPrices = await prices();
    const closedUpdates = await updates();
    await sleep(1500);
    assert.deepEqual(await prices(), closedPrices, "no price moves while closed");
    assert.equal(await updates(), closedUpdates, "no updates while closed");
    assertClean(assert, page);
    await screenshot(page, "stocks-market-closed");

    await page.click("#open");
    await page.waitForFunction((n) => Number(document.getElementById("updates").textContent) > n + 2,
        closedUpdates, { timeout: 15_000 });
    await screenshot(page, "stocks-market-open");
});

test("move shape: a drag in one page moves the shape in another", async (t) => {
    const { url } = await serverFor(t);
    const mover = await newPage(browser, `${url}/shape?transport=WebSockets`);
    const watcher = await newPage(browser, `${url}/shape?transport=LongPolling&protocol=messagepack`);
    t.after(() => closeAll([mover, watcher]));
    for (const page of [mover, watcher]) {
        await page.waitForFunction(() => document.body.dataset.state === "connected"
            && document.getElementById("shape").dataset.left !== undefined);
    }
    const box = await mover.locator("#shape").boundingBox();
    const start = { x: box.x + box.width / 2, y: box.y + box.height / 2 };
    await mover.mouse.move(start.x, start.y);
    await mover.mouse.down();
    await mover.mouse.move(start.x + 320, start.y + 160, { steps: 30 });
    await mover.mouse.up();
    const moved = await mover.evaluate(() => {
        const s = document.getElementById("shape").dataset;
        return { left: Number(s.left), top: Number(s.top) };
    });
    assert.ok(moved.left > 300 && moved.top > 150, `the mover's shape moved (${JSON.stringify(moved)})`);
    await watcher.waitForFunction(({ left, top }) => {
        const s = document.getElementById("shape").dataset;
        return Number(s.left) === left && Number(s.top) === top;
    }, moved, { timeout: 10_000 });
    const sent = Number(await mover.textContent("#sent"));
    const received = Number(await watcher.textContent("#received"));
    assert.ok(received >= 1 && received <= sent, `throttled: ${received} updates for ${sent} moves`);
    assertClean(assert, mover, watcher);
    await screenshot(watcher, "shape-moved-by-another-window");
});

test("status: live counts of connections by transport and protocol (classic too), rooms and traffic", async (t) => {
    const { url } = await serverFor(t);
    const status = await newPage(browser, `${url}/status`);
    await status.waitForFunction(() => document.body.dataset.state === "connected");
    const dee = await openChat(url, {
        name: "dee", room: "dotnet", transport: "WebSockets", protocol: "messagepack",
    });
    const eve = await openChat(url, { name: "eve", room: "dotnet", transport: "LongPolling" });
    const fay = await openChat(url, { name: "fay", room: "rust", transport: "ServerSentEvents" });
    const gil = await openChat(url, { name: "gil", room: "rust", transport: "LongPolling", client: "classic" });
    t.after(() => closeAll([status, dee, eve, fay, gil]));
    for (let i = 0; i < 5; i++) {
        await say(dee, `ping ${i}`);
        await say(eve, `pong ${i}`);
    }
    const cell = (selector) => status.evaluate(
        (s) => document.querySelector(s)?.textContent ?? null, selector);
    await status.waitForFunction(() => {
        const count = (key) => document.querySelector(`#by-kind tr[data-key="${key}"] td:last-child`)?.textContent;
        return count("chat/WebSockets/messagepack") === "1" && count("chat/LongPolling/json") === "1"
            && count("chat/ServerSentEvents/json") === "1" && count("status/WebSockets/json") === "1"
            && count("chat/LongPolling/classic") === "1"
            && document.getElementById("connections").textContent === "5";
    }, null, { timeout: 10_000 });
    assert.equal(await cell('#rooms tr[data-room="dotnet"] td.num'), "2");
    assert.equal(await cell('#rooms tr[data-room="rust"] td.num'), "2");
    assert.equal(await cell('#rooms tr[data-room="rust"] td:last-child'), "fay, gil");
    // Long polling: JSON 1 (eve), MessagePack 0, Classic 1 (gil), total 2.
    assert.deepEqual(await status.locator('#by-transport tr[data-transport="LongPolling"] td.num').allTextContents(),
        ["1", "0", "1", "2"]);
    assert.equal(await cell("#groups"), "2");
    // One server: no backplane, every hub in memory, this server alone in the servers table.
    assert.equal(await cell("#backplane-redis"), "none: every hub is in memory (one server)");
    assert.deepEqual(await status.locator("#backplane tbody tr").evaluateAll((rows) =>
        rows.map((r) => [...r.cells].map((c) => c.textContent))), [
        ["chat", "in memory", "–", "–"], ["stocks", "in memory", "–", "–"],
        ["shape", "in memory", "–", "–"], ["status", "in memory", "–", "–"],
    ]);
    assert.equal(await status.locator("#servers tbody tr").count(), 1);
    assert.equal(await cell("#servers tbody tr td:first-child"), `${url} (this one)`);
    assert.equal(await cell('#by-transport tr[data-transport="WebSockets"] td:last-child'), "2");
    // The same totals in Prometheus' text at /metrics: ASP.NET Core's metric, without the
    // classic connection.
    const exposition = await (await fetch(`${url}/metrics`)).text();
    for (const [transport, count] of [["web_sockets", 2], ["long_polling", 1], ["server_sent_events", 1]]) {
        assert.match(exposition, new RegExp(`^signalr_server_active_connections\\{signalr_transport="${transport}"\\} ${count}$`, "m"));
    }
    // Some seconds of traffic for the chart, which draws the history the server pushes.
    const until = Date.now() + 4000;
    for (let i = 0; Date.now() < until; i++) {
        await say(i % 2 ? dee : fay, `chatter ${i}`);
        await sleep(i % 7 === 0 ? 300 : 60);
    }
    await status.waitForFunction(() => Number(document.getElementById("in-rate").textContent) > 0);
    assertClean(assert, status, dee, eve, fay, gil);
    await screenshot(status, "status-live-counts");
});

test("two servers on one Redis: the status page shows the backplane and both servers, the stock page of the server without a market follows the other's, chat pages (jQuery too) talk across them", async (t) => {
    const redis = await startRedis();
    if (!redis) {
        console.log(`# SKIPPED: ${NO_REDIS}`);
        t.skip(NO_REDIS);
        return;
    }
    t.after(() => redis.stop());
    const a = await serverFor(t, { args: ["--redis", redis.address, "--redis-prefix", "test."] });
    const b = await serverFor(t, { args: ["--redis", redis.address, "--redis-prefix", "test.", "--no-market"] });
    const status = await newPage(browser, `${b.url}/status?client=classic`);
    const stocksA = await newPage(browser, `${a.url}/stocks`);
    const stocksB = await newPage(browser, `${b.url}/stocks?protocol=messagepack`);
    const pages = [status, stocksA, stocksB];
    t.after(() => closeAll(pages));
    await status.waitForFunction(() => document.querySelectorAll("#servers tbody tr").length === 2
        && [...document.querySelectorAll("#backplane tbody td:last-child")].every((td) => td.textContent === "yes"),
    null, { timeout: 10_000 });
    assert.equal(await status.textContent("#backplane-redis"), `Redis at ${redis.address}, channel prefix "test."`);
    const rows = await status.locator("#backplane tbody tr").evaluateAll((trs) =>
        trs.map((r) => [...r.cells].map((c) => c.textContent)));
    assert.deepEqual(rows.map((r) => [r[0], r[1], r[3]]), [
        ["chat", "Demo.ChatHub", "yes"], ["stocks", "Demo.StockTickerHub", "yes"],
        ["shape", "Demo.MoveShapeHub", "yes"], ["status", "Demo.StatusHub", "yes"],
    ]);
    for (const r of rows) assert.match(r[2], /_[0-9a-f]{32}$/, "the hub's server name on the backplane");
    const servers = await status.locator("#servers tbody tr").evaluateAll((trs) =>
        trs.map((r) => [r.cells[0].textContent, r.cells[4].textContent]));
    assert.deepEqual(servers.sort(), [[a.url, "runs here"], [`${b.url} (this one)`, "elsewhere"]].sort());

    // B runs no market: its page says so, cannot drive it, and shows A's prices as they come.
    await stocksB.waitForFunction(() => document.body.dataset.state === "connected");
    assert.equal(await stocksB.isVisible("#market-note"), true);
    for (const button of ["#open", "#close", "#reset"]) {
        assert.equal(await stocksB.isDisabled(button), true, `${button} on the server without a market`);
    }
    await stocksB.waitForFunction(() => Number(document.getElementById("updates").textContent) >= 5
        && document.querySelectorAll("#stocks tbody tr").length === 5, null, { timeout: 10_000 });
    assert.equal(await stocksB.textContent("#market-state"), "open");
    assert.equal(await stocksA.isVisible("#market-note"), false);
    await stocksA.waitForFunction(() => document.body.dataset.market === "open");
    await stocksA.click("#close");
    await stocksB.waitForFunction(() => document.body.dataset.market === "closed");
    // Both pages end on the same prices: one market feeds both servers.
    await sleep(500);
    const prices = (page) => page.locator("#stocks tbody tr").evaluateAll((trs) =>
        trs.map((r) => `${r.dataset.symbol} ${r.cells[1].textContent}`).sort());
    assert.deepEqual(await prices(stocksB), await prices(stocksA));

    // Chat pages on both servers, a jQuery one among them: one room, private messages by name.
    const jo = await openChat(a.url, { name: "jo", room: "lobby", transport: "LongPolling", client: "classic" });
    const kim = await openChat(b.url, { name: "kim", room: "lobby", transport: "WebSockets", protocol: "messagepack" });
    pages.push(jo, kim);
    await sees(jo, "kim joined #lobby");
    await say(jo, "hello B, jQuery on A here");
    await say(kim, "hello A, Core on B here");
    await say(kim, "psst, across servers", "jo");
    for (const page of [jo, kim]) {
        await sees(page, "jo: hello B, jQuery on A here", "#messages li.msg");
        await sees(page, "kim: hello A, Core on B here", "#messages li.msg");
    }
    await sees(jo, "kim → you (private): psst, across servers", "#messages li.private");
    await sleep(300);
    assert.equal(await countOf(kim, "jQuery on A here", "#messages li.msg"), 1, "once");
    assert.equal(await countOf(jo, "psst, across servers", "#messages li.private"), 1, "once");
    // Each page's member list starts with its own server's names; kim's join reached jo.
    assert.deepEqual(await jo.locator("#members li").allTextContents(), ["jo", "kim"]);
    assert.deepEqual(await kim.locator("#members li").allTextContents(), ["kim"]);
    assertClean(assert, ...pages);
    await screenshot(status, "status-two-servers-redis");
    await screenshot(kim, "chat-across-servers-core-on-b");
    await screenshot(stocksB, "stocks-on-the-server-without-a-market");
});

test("reconnect: after a SIGKILL and a restart on the same port, pages reconnect and rejoin their room (jQuery too)", async (t) => {
    let server = await startServer();
    const { url, port } = server;
    t.after(() => server.stop());
    const gus = await openChat(url, { name: "gus", room: "rust", transport: "WebSockets" });
    const hal = await openChat(url, { name: "hal", room: "rust", transport: "ServerSentEvents" });
    const ida = await openChat(url, {
        name: "ida", room: "rust", transport: "LongPolling", protocol: "messagepack",
    });
    const jan = await openChat(url, { name: "jan", room: "rust", transport: "WebSockets", client: "classic" });
    const pages = [gus, hal, ida, jan];
    t.after(() => closeAll(pages));
    const janBefore = await connectionId(jan);
    await say(gus, "before the crash");
    for (const page of pages) await sees(page, "before the crash", "#messages li.msg");

    const { signal } = await server.kill("SIGKILL");
    assert.equal(signal, "SIGKILL");
    for (const page of pages) {
        await page.waitForFunction(() => document.body.dataset.state === "reconnecting",
            null, { timeout: 15_000 });
    }
    await sees(gus, "connection lost: reconnecting");
    await screenshot(hal, "reconnect-reconnecting");

    server = await startServer({ port });
    for (const page of pages) {
        // jquery.signalR first tries to resume its connection, which the new server process
        // cannot know (its tokens are signed with another key); it gives up after the server's
        // disconnect timeout (30 s) and the page then starts a new connection.
        const timeout = page === jan ? 60_000 : 20_000;
        await page.waitForFunction(() => document.body.dataset.state === "connected"
            && document.body.dataset.room === "rust", null, { timeout });
        await sees(page, "you rejoined #rust");
    }
    assert.notEqual(await connectionId(jan), janBefore, "jan has a new connection");
    await say(gus, "after the restart");
    await say(ida, "still here, on long polling");
    await say(jan, "and jQuery is back");
    for (const page of pages) {
        await sees(page, "after the restart", "#messages li.msg");
        await sees(page, "still here, on long polling", "#messages li.msg");
        await sees(page, "and jQuery is back", "#messages li.msg");
    }
    assert.equal(await gus.getAttribute("#transport-info", "data-transport"), "WebSockets");
    assert.equal(await hal.getAttribute("#transport-info", "data-transport"), "ServerSentEvents");
    assert.equal(await ida.getAttribute("#transport-info", "data-transport"), "LongPolling");
    assert.equal(await jan.getAttribute("#transport-info", "data-transport"), "WebSockets");
    assert.equal(await jan.getAttribute("#transport-info", "data-client"), "classic");
    assertClean(assert, ...pages);
    await screenshot(gus, "reconnect-rejoined-websockets");
});

test("Ctrl-C with jQuery and Core pages open: the server exits at once, every page goes to reconnecting", async (t) => {
    const server = await serverFor(t);
    const pages = [];
    t.after(() => closeAll(pages));
    for (const transport of ["WebSockets", "ServerSentEvents", "LongPolling"]) {
        pages.push(await openChat(server.url, { name: `jq-${transport}`, room: "lobby", transport, client: "classic" }));
    }
    pages.push(await openChat(server.url, { name: "kit", room: "lobby", transport: "WebSockets" }));
    const started = Date.now();
    const { code } = await server.kill("SIGINT");
    assert.equal(code, 0, server.output());
    assert.ok(Date.now() - started < 3000, `shutdown took ${Date.now() - started} ms\n${server.output()}`);
    assert.doesNotMatch(server.output(), /still open/, "nothing held the shutdown up");
    assert.match(server.output(), /demo server stopped/);
    for (const page of pages) {
        await page.waitForFunction(() => document.body.dataset.state === "reconnecting", null, { timeout: 15_000 });
    }
    assertClean(assert, ...pages);
});
