// Starts a redis-server of the tests' own on a free loopback port (no persistence), for the
// demo servers' `--redis`.

import { spawn, spawnSync } from "node:child_process";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** Why the Redis tests are skipped when redis-server is missing. */
export const NO_REDIS = "redis-server is not installed (./scripts/test.sh installs it)";

function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

function canConnect(port) {
    return new Promise((resolve) => {
        const socket = net.connect(port, "127.0.0.1");
        socket.once("connect", () => { socket.destroy(); resolve(true); });
        socket.once("error", () => resolve(false));
    });
}

/**
 * Starts redis-server on a free loopback port; null when it is not installed.
 * @returns {Promise<{ address: string, stop: () => Promise<void> } | null>}
 */
export async function startRedis() {
    if (spawnSync("redis-server", ["--version"], { stdio: "ignore" }).error) return null;
    const port = await freePort();
    const child = spawn("redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        { stdio: "ignore" });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(port))) {
        if (Date.now() > deadline || child.exitCode !== null) {
            child.kill("SIGKILL");
            throw new Error(`redis-server did not listen on ${port}`);
        }
        await sleep(20);
    }
    return {
        address: `127.0.0.1:${port}`,
        stop: async () => {
            if (child.exitCode === null) child.kill("SIGKILL");
            await exited;
        },
    };
}
