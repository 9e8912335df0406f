// Starts the classic SignalR server under test.
//
// Command: $CLASSIC_SERVER_CMD, a shell command run from the repository root that starts a server
// printing `Listening on http://ADDR:PORT` and serving the classic TestHub contract at /signalr
// plus `GET /broadcast?msg=M` (e.g. `target/debug/conformance-server --port 0`). Without it, the
// real classic server next to the checkout (../shared/peers/classic-peer --port 0) is used; when
// that is absent too, `serverCommand()` returns null and the suite skips.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The interop/classic package folder. */
export const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The repository root. */
export const repoRoot = path.resolve(packageDir, "..", "..");
/** The real classic server, when the checkout has ../shared/peers beside it. */
export const defaultPeer = path.resolve(repoRoot, "..", "shared", "peers", "classic-peer");

const LISTENING = /Listening on (http:\/\/\S+)/;
const OUTPUT_LIMIT = 256 * 1024;

/** The shell command that starts the server under test, or null when there is none. */
export function serverCommand() {
    const given = (process.env.CLASSIC_SERVER_CMD ?? "").trim();
    if (given) return given;
    if (existsSync(defaultPeer)) return `'${defaultPeer.replaceAll("'", "'\\''")}' --port 0`;
    return null;
}

/**
 * Starts the server (in its own process group, so that a wrapper shell and the server stop
 * together) and waits for its `Listening on` line.
 * @returns {Promise<{ url: string, command: string, output: () => string, stop: () => Promise<void> }>}
 */
export async function startServer(command = serverCommand(), { timeoutMs = 30_000 } = {}) {
    if (!command) throw new Error("no classic server command");
    const child = spawn("sh", ["-c", command], {
        cwd: repoRoot,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const keep = (chunk) => {
        if (output.length < OUTPUT_LIMIT) output += chunk;
    };
    let alive = true;
    const exited = new Promise((resolve) => child.once("exit", (code, signal) => {
        alive = false;
        resolve({ code, signal });
    }));
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", keep);
    const url = await new Promise((resolve, reject) => {
        let seen = "";
        const timer = setTimeout(() => reject(new Error(
            `the classic server (${command}) did not print "Listening on" within ${timeoutMs} ms:\n${output}`)),
        timeoutMs);
        child.stdout.on("data", (chunk) => {
            keep(chunk);
            if (seen.length < OUTPUT_LIMIT) seen += chunk;
            const match = LISTENING.exec(seen);
            if (match) {
                clearTimeout(timer);
                resolve(match[1].replace(/\/$/, ""));
            }
        });
        exited.then(({ code, signal }) => {
            clearTimeout(timer);
            reject(new Error(`the classic server (${command}) exited (${code ?? signal}) before listening:\n${output}`));
        });
    });
    const signalGroup = (signal) => {
        try {
            process.kill(-child.pid, signal);
        } catch {
            // already gone
        }
    };
    const stop = async () => {
        if (!alive) return;
        signalGroup("SIGTERM");
        const timer = setTimeout(() => alive && signalGroup("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
        signalGroup("SIGKILL"); // whatever the shell left behind in the group
    };
    return { url, command, output: () => output, stop };
}
