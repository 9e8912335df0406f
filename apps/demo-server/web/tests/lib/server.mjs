// Starts the Rust `demo-server` binary for the tests and returns its base URL.
//
// Binary: $DEMO_SERVER_BIN, or target/debug/demo-server at the repository root. It is started
// with `--port <port>` (0 = a free one) and any extra `args`, and must print
// `Listening on http://<host>:<port>`.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The web/ package folder (apps/demo-server/web). */
export const webDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The repository root. */
export const repoRoot = path.resolve(webDir, "..", "..", "..");

/** Absolute path of the server binary under test. */
export const serverBin = process.env.DEMO_SERVER_BIN
    ? path.resolve(process.env.DEMO_SERVER_BIN)
    : path.join(repoRoot, "target", "debug", "demo-server");

const LISTENING = /Listening on (http:\/\/\S+)/;

/**
 * Starts the demo server.
 * @param {{ port?: number, timeoutMs?: number, args?: string[] }} [options]
 * @returns {Promise<{ url: string, port: number, child: import("node:child_process").ChildProcess,
 *   output: () => string, exited: Promise<{ code: number | null, signal: string | null }>,
 *   kill: (signal?: string) => Promise<{ code: number | null, signal: string | null }>,
 *   stop: () => Promise<void> }>}
 */
export async function startServer(options = {}) {
    const port = options.port ?? 0;
    const timeoutMs = options.timeoutMs ?? 20_000;
    if (!existsSync(serverBin)) {
        throw new Error(`demo-server binary not found at ${serverBin} ` +
            "(build it with `cargo build -p demo-server` or set DEMO_SERVER_BIN)");
    }
    const args = ["--port", String(port), "--web-dir", webDir, ...(options.args ?? [])];
    const child = spawn(serverBin, args, {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
    });
    let output = "";
    let alive = true;
    const exited = new Promise((resolve) => child.once("exit", (code, signal) => {
        alive = false;
        resolve({ code, signal });
    }));
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => { output += chunk; });
    const url = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(
            `demo-server did not start within ${timeoutMs} ms:\n${output}`)), timeoutMs);
        child.stdout.on("data", (chunk) => {
            output += chunk;
            const match = LISTENING.exec(output);
            if (match) { clearTimeout(timer); resolve(match[1]); }
        });
        exited.then(({ code, signal }) => {
            clearTimeout(timer);
            reject(new Error(`demo-server exited (${code ?? signal}) before listening:\n${output}`));
        });
    });
    const kill = async (signal = "SIGTERM") => {
        if (alive) child.kill(signal);
        return exited;
    };
    const stop = async () => {
        if (!alive) return;
        child.kill("SIGTERM");
        const timer = setTimeout(() => alive && child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
    };
    return { url, port: Number(new URL(url).port), child, output: () => output, exited, kill, stop };
}
