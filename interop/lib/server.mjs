// Starts the Rust `chat-server` binary (or another server binary, e.g. `conformance-server`) for
// the interop tests and returns its base URL.
//
// Binary: $CHAT_SERVER_BIN, or ../target/debug/chat-server relative to the interop folder; the
// `bin` option picks another one (`conformanceServerBin`: $CONFORMANCE_SERVER_BIN, or
// ../target/debug/conformance-server). It is started with `--port 0` plus the caller's extra arguments and must print
// `Listening on http://<host>:<port>` on stdout once it accepts connections.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const interopDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Absolute path of the server binary under test. */
export const serverBin = process.env.CHAT_SERVER_BIN
    ? path.resolve(interopDir, process.env.CHAT_SERVER_BIN)
    : path.resolve(interopDir, "..", "target", "debug", "chat-server");

/** Absolute path of the conformance server binary (the hubs of ASP.NET's client functional tests). */
export const conformanceServerBin = process.env.CONFORMANCE_SERVER_BIN
    ? path.resolve(interopDir, process.env.CONFORMANCE_SERVER_BIN)
    : path.resolve(interopDir, "..", "target", "debug", "conformance-server");

const LISTENING = /Listening on (http:\/\/\S+)/;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;

/**
 * Starts the server.
 * @param {string[]} [extraArgs] extra CLI arguments, e.g. ["--detailed-errors"].
 * @param {{ timeoutMs?: number, bin?: string, leadingArgs?: string[] }} [options] `bin`: the binary
 *   to start (default `serverBin`, the chat-server); `leadingArgs`: arguments before `--port 0`.
 * @returns {Promise<{ url: string, args: string[], pid: number, stderr: () => string,
 *   stdout: () => string, stop: () => Promise<void> }>}
 */
export async function startServer(extraArgs = [], options = {}) {
    const timeoutMs = options.timeoutMs ?? START_TIMEOUT_MS;
    const bin = options.bin ?? serverBin;
    const args = [...(options.leadingArgs ?? []), "--port", "0", ...extraArgs];

    if (!existsSync(bin)) {
        const name = path.basename(bin);
        const envVar = bin === conformanceServerBin ? "CONFORMANCE_SERVER_BIN" : "CHAT_SERVER_BIN";
        throw new Error(`${name} binary not found at ${bin} ` +
            `(build it with \`cargo build -p ${name}\` or set ${envVar})`);
    }

    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdoutBuf = "";
    let stderrBuf = "";
    let exited = false;
    const exitPromise = new Promise((resolve) => {
        child.once("exit", (code, signal) => {
            exited = true;
            resolve({ code, signal });
        });
    });

    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => { stderrBuf += chunk; });
    child.stdout.setEncoding("utf8");

    const describe = () => `${bin} ${args.join(" ")}`;

    let url;
    try {
        url = await new Promise((resolve, reject) => {
            let pending = "";
            let found = false;
            const timer = setTimeout(() => {
                reject(new Error(`${describe()} did not print "Listening on http://..." within ` +
                    `${timeoutMs} ms.\n--- stdout ---\n${stdoutBuf}\n--- stderr ---\n${stderrBuf}`));
            }, timeoutMs);
            child.stdout.on("data", (chunk) => {
                // Keep draining stdout for the whole life of the process so it never blocks.
                stdoutBuf += chunk;
                if (found) {
                    return;
                }
                pending += chunk;
                const lines = pending.split(/\r?\n/);
                pending = lines.pop();
                for (const line of lines) {
                    const match = LISTENING.exec(line);
                    if (match) {
                        found = true;
                        clearTimeout(timer);
                        resolve(match[1].replace(/\/+$/, ""));
                        return;
                    }
                }
            });
            child.once("error", (err) => {
                clearTimeout(timer);
                reject(new Error(`failed to start ${describe()}: ${err.message}\n--- stderr ---\n${stderrBuf}`));
            });
            exitPromise.then(({ code, signal }) => {
                clearTimeout(timer);
                // Give the stderr stream a moment to flush before reporting.
                setTimeout(() => reject(new Error(
                    `${describe()} exited (code ${code}, signal ${signal}) before listening.` +
                    `\n--- stdout ---\n${stdoutBuf}\n--- stderr ---\n${stderrBuf}`)), 50);
            });
        });
    } catch (err) {
        if (!exited) {
            child.kill("SIGKILL");
            await exitPromise;
        }
        throw err;
    }

    let stopping;
    const stop = () => {
        if (!stopping) {
            stopping = (async () => {
                if (exited) {
                    return;
                }
                child.kill("SIGTERM");
                const timer = setTimeout(() => { if (!exited) child.kill("SIGKILL"); }, STOP_TIMEOUT_MS);
                await exitPromise;
                clearTimeout(timer);
            })();
        }
        return stopping;
    };

    return {
        url,
        args,
        pid: child.pid,
        stdout: () => stdoutBuf,
        stderr: () => stderrBuf,
        stop,
    };
}
