#!/usr/bin/env node
// `npm test`: runs the tests in tests/ under Node's test runner (one file at a time), then prints
// one line per screenshot the browser tests saved, and a closing `N passed, N failed` line.
// Exits with the test runner's code.

import { spawn } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { screenshotDir } from "./tests/lib/browser.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const child = spawn(process.execPath,
    ["--test", "--test-concurrency=1", ...process.argv.slice(2), "tests/"],
    { cwd: here, stdio: ["ignore", "pipe", "inherit"] });
let output = "";
child.stdout.setEncoding("utf8");
child.stdout.on("data", (chunk) => {
    output += chunk;
    process.stdout.write(chunk);
});
const code = await new Promise((resolve) => child.on("exit", (c, signal) => resolve(c ?? (signal ? 1 : 0))));

const shots = existsSync(screenshotDir)
    ? readdirSync(screenshotDir).filter((f) => f.endsWith(".png"))
        .map((f) => path.join(screenshotDir, f))
        .sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs)
    : [];
console.log("");
for (const file of shots) console.log(`screenshot: ${file}`);
const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(output)?.[1] ?? 0);
console.log(`demo-server: ${count("pass")} passed, ${count("fail")} failed`);
process.exit(code);
