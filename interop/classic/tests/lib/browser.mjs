// Headless Debian Chromium driven by playwright-core (never a downloaded browser).

import { existsSync } from "node:fs";

import { chromium } from "playwright-core";

/** Chromium from Debian's package, or $CHROMIUM_PATH. */
export const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Launches headless Chromium with the flags this machine needs (no network beyond loopback). */
export async function launchBrowser() {
    if (!existsSync(chromiumPath)) {
        throw new Error(`no Chromium at ${chromiumPath}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`);
    }
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
 * Opens `url` in its own browser context. The page records its script errors (`page.errors`)
 * and every request that left the page's origin (`page.foreign`).
 */
export async function openPage(browser, url) {
    const context = await browser.newContext();
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
    await page.waitForFunction(() => typeof window.harness === "object");
    return page;
}
