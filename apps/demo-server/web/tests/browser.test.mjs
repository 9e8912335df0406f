// The demo pages in real browsers: headless Debian Chromium driven by playwright-core, against
// the Rust demo-server started on a free port. Each test saves screenshots under
// test-output/demo-server/ (run-tests.mjs prints their paths at the end).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import {
    assertClean, clearScreenshots, launchBrowser, newPage, screenshot,
} from "./lib/browser.mjs";
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

/**
 * Opens the chat page, picks transport, protocol, name and room in the page's controls, connects
 * and waits until the room is joined.
 */
async function openChat(url, { name, room, transport, protocol = "json" }) {
    const page = await newPage(browser, `${url}/chat`);
    await page.fill("#name", name);
    await page.selectOption("#room", room);
    await page.selectOption("#transport", transport);
    await page.selectOption("#protocol", protocol);
    await page.click("#connect");
    await page.waitForFunction((r) => document.body.dataset.room === r, room);
    const info = page.locator("#transport-info");
    assert.equal(await info.getAttribute("data-transport"), transport, `${name}'s transport`);
    assert.equal(await info.getAttribute("data-protocol"), protocol, `${name}'s protocol`);
    return page;
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

test("index: links to every demo; the official client comes from the server's node_modules", async (t) => {
    const { url } = await serverFor(t);
    const page = await newPage(browser, `${url}/`);
    t.after(() => closeAll([page]));
    const links = await page.locator("main a.card").evaluateAll((as) => as.map((a) => a.getAttribute("href")));
    assert.deepEqual(links, ["/chat", "/stocks", "/shape", "/status"]);
    for (const file of ["signalr.min.js", "signalr-protocol-msgpack.min.js"]) {
        const response = await fetch(`${url}/lib/${file}`);
        assert.equal(response.status, 200, file);
        assert.match(response.headers.get("content-type"), /javascript/);
        assert.ok((await response.text()).length > 10_000, `${file} is the real bundle`);
    }
    assert.equal((await fetch(`${url}/lib/package.json`)).status, 404);
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

test("status: live counts of connections by transport and protocol, rooms and traffic", async (t) => {
    const { url } = await serverFor(t);
    const status = await newPage(browser, `${url}/status`);
    await status.waitForFunction(() => document.body.dataset.state === "connected");
    const dee = await openChat(url, {
        name: "dee", room: "dotnet", transport: "WebSockets", protocol: "messagepack",
    });
    const eve = await openChat(url, { name: "eve", room: "dotnet", transport: "LongPolling" });
    const fay = await openChat(url, { name: "fay", room: "rust", transport: "ServerSentEvents" });
    t.after(() => closeAll([status, dee, eve, fay]));
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
            && document.getElementById("connections").textContent === "4";
    }, null, { timeout: 10_000 });
    assert.equal(await cell('#rooms tr[data-room="dotnet"] td.num'), "2");
    assert.equal(await cell('#rooms tr[data-room="rust"] td.num'), "1");
    assert.equal(await cell("#groups"), "2");
    assert.equal(await cell('#by-transport tr[data-transport="WebSockets"] td:last-child'), "2");
    // Some seconds of traffic for the chart, which draws the history the server pushes.
    const until = Date.now() + 4000;
    for (let i = 0; Date.now() < until; i++) {
        await say(i % 2 ? dee : fay, `chatter ${i}`);
        await sleep(i % 7 === 0 ? 300 : 60);
    }
    await status.waitForFunction(() => Number(document.getElementById("in-rate").textContent) > 0);
    assertClean(assert, status, dee, eve, fay);
    await screenshot(status, "status-live-counts");
});

test("reconnect: after a SIGKILL and a restart on the same port, pages reconnect and rejoin their room", async (t) => {
    let server = await startServer();
    const { url, port } = server;
    t.after(() => server.stop());
    const gus = await openChat(url, { name: "gus", room: "rust", transport: "WebSockets" });
    const hal = await openChat(url, { name: "hal", room: "rust", transport: "ServerSentEvents" });
    const ida = await openChat(url, {
        name: "ida", room: "rust", transport: "LongPolling", protocol: "messagepack",
    });
    const pages = [gus, hal, ida];
    t.after(() => closeAll(pages));
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
        await page.waitForFunction(() => document.body.dataset.state === "connected"
            && document.body.dataset.room === "rust", null, { timeout: 20_000 });
        await sees(page, "you rejoined #rust");
    }
    await say(gus, "after the restart");
    await say(ida, "still here, on long polling");
    for (const page of pages) {
        await sees(page, "after the restart", "#messages li.msg");
        await sees(page, "still here, on long polling", "#messages li.msg");
    }
    assert.equal(await gus.getAttribute("#transport-info", "data-transport"), "WebSockets");
    assert.equal(await hal.getAttribute("#transport-info", "data-transport"), "ServerSentEvents");
    assert.equal(await ida.getAttribute("#transport-info", "data-transport"), "LongPolling");
    assertClean(assert, ...pages);
    await screenshot(gus, "reconnect-rejoined-websockets");
});
