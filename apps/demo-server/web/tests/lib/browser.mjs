// Headless Debian Chromium driven by playwright-core (never a downloaded browser), and the
// screenshots the browser tests save under test-output/demo-server/ at the repository root.

import { mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

import { repoRoot } from "./server.mjs";

/** Chromium from Debian's package, or $CHROMIUM_PATH. */
export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Where screenshots go. */
export const screenshotDir = path.join(repoRoot, "test-output", "demo-server");

const screenshots = [];

/** Launches headless Chromium with the flags this machine needs (no network beyond loopback). */
export async function launchBrowser() {
    return chromium.launch({
        executablePath: chromiumPath,
        headless: true,
        args: [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ],
    });
}

/**
 * Opens a page in its own browser context (its own cookies and connection pool). The page
 * records its script errors (`page.errors`) and every request that left the server's origin
 * (`page.foreign`: a CDN would show up there).
 */
export async function newPage(browser, url) {
    const context = await browser.newContext({ viewport: { width: 1180, height: 860 } });
    const page = await context.newPage();
    const origin = new URL(url).origin;
    page.errors = [];
    page.foreign = [];
    page.on("pageerror", (err) => page.errors.push(err.message));
    page.on("request", (request) => {
        const target = request.url();
        if (!target.startsWith(`${origin}/`) && !target.startsWith("data:")) page.foreign.push(target);
    });
    await page.goto(url);
    return page;
}

/** No script error and no request to anywhere but the demo server. */
export function assertClean(assert, ...pages) {
    for (const page of pages) {
        assert.deepEqual(page.errors, [], `script errors on ${page.url()}`);
        assert.deepEqual(page.foreign, [], `requests away from the server on ${page.url()}`);
    }
}

/** Removes the screenshots of earlier runs. */
export function clearScreenshots() {
    mkdirSync(screenshotDir, { recursive: true });
    for (const file of readdirSync(screenshotDir)) {
        if (file.endsWith(".png")) rmSync(path.join(screenshotDir, file));
    }
}

/** Saves a full-page screenshot as test-output/demo-server/<name>.png and remembers its path. */
export async function screenshot(page, name) {
    mkdirSync(screenshotDir, { recursive: true });
    const file = path.join(screenshotDir, `${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    screenshots.push(file);
    return file;
}

/** The screenshots saved so far. */
export function savedScreenshots() {
    return [...screenshots];
}
