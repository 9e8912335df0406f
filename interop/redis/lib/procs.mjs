// Child processes for the Redis backplane suite: redis-server, hub servers (the real ASP.NET Core
// peer or our conformance server) and their configuration.
//
// Environment:
//   REDIS_SERVERS          the server kinds, comma-separated: "dotnet", "ours" (default "dotnet,dotnet").
//                          A test that needs N servers takes kinds[i % kinds.length] for server i.
//   REDIS_PORT             the port of a redis-server already running on 127.0.0.1 (run.sh sets it);
//                          unset: the suite starts its own.
//   REDIS_SERVER_BIN       redis-server binary (default: redis-server on PATH).
//   REDIS_CLI_BIN          redis-cli binary (default: redis-cli on PATH).
//   DOTNET_PEERS_DIR       folder of the prebuilt .NET peers (default: ../shared/peers from the repo root).
//   CONFORMANCE_SERVER_BIN our server (default: target/debug/conformance-server in the repo).

import { spawn, execFile } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const suiteDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const repoRoot = path.resolve(suiteDir, "..", "..");

export const peersDir = process.env.DOTNET_PEERS_DIR
    ? path.resolve(process.env.DOTNET_PEERS_DIR)
    : path.resolve(repoRoot, "..", "shared", "peers");
export const dotnetPeer = path.join(peersDir, "dotnet-peer");
export const oursBin = process.env.CONFORMANCE_SERVER_BIN
    ? path.resolve(process.env.CONFORMANCE_SERVER_BIN)
    : path.join(repoRoot, "target", "debug", "conformance-server");
export const redisServerBin = process.env.REDIS_SERVER_BIN || "redis-server";
export const redisCliBin = process.env.REDIS_CLI_BIN || "redis-cli";

/** True when the prebuilt .NET peers are there. */
export const havePeers = existsSync(dotnetPeer);

const KINDS = new Set(["dotnet", "ours"]);

/** The configured server kinds, e.g. ["dotnet", "ours"]. */
export function serverKinds() {
    const raw = (process.env.REDIS_SERVERS || "dotnet,dotnet").split(",").map((k) => k.trim()).filter(Boolean);
    for (const kind of raw) {
        if (!KINDS.has(kind)) {
            throw new Error(`REDIS_SERVERS: unknown server kind "${kind}" (use dotnet or ours)`);
        }
    }
    if (raw.length === 0) {
        throw new Error("REDIS_SERVERS is empty");
    }
    return raw;
}

/** The kinds of `n` servers: the configured list, repeated as needed. */
export function kindsFor(n) {
    const kinds = serverKinds();
    return Array.from({ length: n }, (_, i) => kinds[i % kinds.length]);
}

/** Why the configured servers cannot run here, or null when they can. */
export function missingServers() {
    const kinds = serverKinds();
    if (kinds.includes("dotnet") && !havePeers) {
        return `the .NET peers are not here (${dotnetPeer}): the "dotnet" server kind cannot run`;
    }
    if (kinds.includes("ours") && !existsSync(oursBin)) {
        return `our conformance server is not built (${oursBin}; cargo build -p conformance-server)`;
    }
    return null;
}

/** A free TCP port on 127.0.0.1 (free when asked; the caller retries if someone takes it first). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Every child still running when this process exits is killed, so a failed or interrupted run
// leaves nothing behind (a signal becomes an exit, so that the exit hook runs).
const live = new Set();
process.on("exit", () => {
    for (const child of live) {
        try {
            child.kill("SIGKILL");
        } catch {
            // already gone
        }
    }
});
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]]) {
    process.once(signal, () => process.exit(code));
}

/** Has `child` killed if this process exits first. */
export function track(child) {
    live.add(child);
    child.once("exit", () => live.delete(child));
    return child;
}

const LOG_CAP = 256 * 1024;

/** Appends to a log kept to its last LOG_CAP characters. */
function capped(log, chunk) {
    const next = log + chunk;
    return next.length > LOG_CAP ? next.slice(next.length - LOG_CAP) : next;
}

/**
 * Spawns a program and waits until a stdout line matches `ready` (its first group is returned).
 * @returns {Promise<{ child, match: string, pid: number, log: () => string, exited: () => boolean,
 *   exitInfo: Promise<{code, signal}>, stop: (signal?: string) => Promise<void> }>}
 */
export async function spawnUntil(bin, args, ready, { timeoutMs = 30_000, what = bin } = {}) {
    const child = track(spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] }));
    let log = "";
    let exited = false;
    const exitInfo = new Promise((resolve) => {
        child.once("exit", (code, signal) => {
            exited = true;
            resolve({ code, signal });
        });
    });
    child.stderr.setEncoding("utf8");
    child.stdout.setEncoding("utf8");
    child.stderr.on("data", (chunk) => { log = capped(log, chunk); });

    const describe = () => `${what} (${bin} ${args.join(" ")})`;
    let match;
    try {
        match = await new Promise((resolve, reject) => {
            let pending = "";
            let found = false;
            const timer = setTimeout(() => reject(new Error(
                `${describe()} did not become ready within ${timeoutMs} ms; output:\n${log}`)), timeoutMs);
            child.stdout.on("data", (chunk) => {
                log = capped(log, chunk);
                if (found) {
                    return;
                }
                pending = capped(pending, chunk);
                const lines = pending.split(/\r?\n/);
                pending = lines.pop();
                for (const line of lines) {
                    const m = ready.exec(line);
                    if (m) {
                        found = true;
                        clearTimeout(timer);
                        resolve(m[1]);
                        return;
                    }
                }
            });
            child.once("error", (err) => {
                clearTimeout(timer);
                reject(new Error(`cannot start ${describe()}: ${err.message}`));
            });
            exitInfo.then(({ code, signal }) => {
                clearTimeout(timer);
                setTimeout(() => reject(new Error(
                    `${describe()} exited (code ${code}, signal ${signal}) before it was ready; output:\n${log}`)), 50);
            });
        });
    } catch (err) {
        if (!exited) {
            child.kill("SIGKILL");
            await exitInfo;
        }
        throw err;
    }

    const stop = async (signal = "SIGTERM") => {
        if (exited) {
            return;
        }
        child.kill(signal);
        const timer = setTimeout(() => { if (!exited) child.kill("SIGKILL"); }, 5_000);
        await exitInfo;
        clearTimeout(timer);
    };
    return { child, match, pid: child.pid, log: () => log, exited: () => exited, exitInfo, stop };
}

/**
 * Starts redis-server on 127.0.0.1 with no persistence. `port` unset: a free one (retried if
 * taken meanwhile); set: exactly that one (a restart on the same port).
 */
export async function startRedis(port) {
    const fixed = port !== undefined;
    for (let attempt = 0; ; attempt++) {
        const p = fixed ? port : await freePort();
        try {
            const proc = await spawnUntil(redisServerBin,
                ["--port", String(p), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                /(Ready to accept connections)/, { timeoutMs: 10_000, what: `redis-server on port ${p}` });
            return { ...proc, port: p };
        } catch (err) {
            // A port taken between freePort() and the bind: try another one. The same port for a
            // restart may still be held by the dying process for a moment: try again.
            if (attempt >= 4) {
                throw err;
            }
            await sleep(200);
        }
    }
}

/** redis-cli against 127.0.0.1:port; resolves with its stdout lines. */
export function redisCli(port, ...args) {
    return new Promise((resolve, reject) => {
        execFile(redisCliBin, ["-h", "127.0.0.1", "-p", String(port), ...args],
            { timeout: 5_000, maxBuffer: 1024 * 1024 }, (err, stdout) => {
                if (err) {
                    reject(new Error(`redis-cli ${args.join(" ")}: ${err.message}`));
                } else {
                    resolve(stdout.split("\n").filter((l) => l.length > 0));
                }
            });
    });
}

/**
 * Starts one hub server sharing the Redis at 127.0.0.1:redisPort.
 * @param {"dotnet" | "ours"} kind
 * @param {number} redisPort
 * @param {{ prefix?: string, name?: string }} [options]
 * @returns {Promise<{ kind, name, url, hubUrl: (query?: string) => string, pid, log, exited, exitInfo, stop }>}
 */
export async function startHubServer(kind, redisPort, { prefix, name = kind } = {}) {
    const redisArgs = ["--redis", `127.0.0.1:${redisPort}`];
    if (prefix !== undefined) {
        redisArgs.push("--redis-prefix", prefix);
    }
    let bin;
    let args;
    if (kind === "dotnet") {
        bin = dotnetPeer;
        args = ["server", "--port", "0", ...redisArgs];
    } else if (kind === "ours") {
        bin = oursBin;
        args = ["--port", "0", ...redisArgs];
    } else {
        throw new Error(`unknown server kind ${kind}`);
    }
    const proc = await spawnUntil(bin, args, /Listening on (http:\/\/\S+)/, { what: `${name} server` });
    const url = proc.match.replace(/\/+$/, "");
    return {
        ...proc,
        kind,
        name,
        url,
        hubUrl: (query = "") => `${url}/chat${query}`,
    };
}

/** Starts `kinds.length` servers, one after the other, on one Redis. */
export async function startServers(kinds, redisPort, options = {}) {
    const servers = [];
    try {
        for (const [i, kind] of kinds.entries()) {
            servers.push(await startHubServer(kind, redisPort, { ...options, name: `${"ABCDEFGH"[i]}(${kind})` }));
        }
    } catch (err) {
        await Promise.all(servers.map((s) => s.stop()));
        throw err;
    }
    return servers;
}

/**
 * The Redis the suite shares: the one run.sh started (REDIS_PORT), else one of our own.
 * @returns {Promise<{ port: number, stop: () => Promise<void> }>}
 */
export async function sharedRedis() {
    if (process.env.REDIS_PORT) {
        const port = Number(process.env.REDIS_PORT);
        if (!Number.isInteger(port) || port <= 0 || port > 65535) {
            throw new Error(`REDIS_PORT=${process.env.REDIS_PORT} is not a port`);
        }
        return { port, stop: async () => {} };
    }
    const redis = await startRedis();
    return { port: redis.port, stop: () => redis.stop() };
}
