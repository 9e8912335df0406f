// A loopback TCP proxy for the interop tests, run inside the test process: it lets a test cut the
// connections between a client and a server without stopping either, and shows what went over it.
//
//   drop()                  cuts every connection it carries with a TCP RST on both sides (client and
//                           server see "connection reset"); new connections are accepted again.
//   drop({ side: "client" }) resets only the client's side: the server's socket stays open and idle
//                           (what the server sees when the network vanishes without a RST reaching it);
//                           whatever the server still writes there is read and thrown away.
//   pause(direction)        stops forwarding bytes one way ("toServer", "toClient" or "both") while the
//                           connections stay open; held(direction) shows the bytes kept so far, resume()
//                           sends them on; drop() throws them away (they are lost on the wire).
//   hold()                  from now on, new connections are accepted but not forwarded: their bytes wait
//                           in the proxy (the client sees a connect that hangs, the server sees nothing).
//   release()               forwards the held connections (and every later one) to the server.
//   log                     one entry per client connection: the first line the client sent (e.g.
//                           "GET /hub?id=... HTTP/1.1") and the first line the server answered
//                           ("HTTP/1.1 101 Switching Protocols"), when there was one.
//
// Node's `socket.resetAndDestroy()` sends the RST (Node >= 16.17).

import net from "node:net";

/**
 * Starts a proxy to `host:port` on a free loopback port.
 * @returns {Promise<{ port: number, url: (base: string) => string, log: ProxyLogEntry[],
 *   drop: (options?: { side?: "both" | "client" }) => number, pause: (direction?: string) => void,
 *   resume: (direction?: string) => void, held: (direction: string) => Buffer,
 *   hold: () => void, release: () => void,
 *   requests: (pattern: RegExp) => ProxyLogEntry[], close: () => Promise<void> }>}
 *
 * @typedef {{ n: number, request?: string, response?: string, closed: boolean, openedAt: number,
 *   answeredAt?: number, closedAt?: number }} ProxyLogEntry (times in ms since the proxy started)
 */
export async function startProxy(host, port) {
    /** @type {Set<{ inbound: net.Socket, outbound?: net.Socket }>} */
    const live = new Set();
    /** @type {(() => void)[]} */
    let held = [];
    let holding = false;
    /** @type {ProxyLogEntry[]} */
    const log = [];
    const orphans = new Set();
    const startedAt = Date.now();
    const paused = { toServer: false, toClient: false };

    /** Forwards a chunk one way, or keeps it while that direction is paused. */
    const pass = (pair, direction, chunk) => {
        if (paused[direction]) {
            pair.held[direction].push(chunk);
            return;
        }
        const to = direction === "toServer" ? pair.outbound : pair.inbound;
        if (to && !to.destroyed) {
            to.write(chunk);
        }
    };
    const directions = (direction) => (direction === "both" ? ["toServer", "toClient"] : [direction]);

    const firstLine = (entry, key) => {
        let seen = "";
        return (chunk) => {
            if (entry[key] !== undefined || seen.length > 8192) {
                return;
            }
            seen += chunk.toString("latin1");
            const end = seen.indexOf("\r\n");
            if (end >= 0) {
                entry[key] = seen.slice(0, end);
                if (key === "response") {
                    entry.answeredAt = Date.now() - startedAt;
                }
            }
        };
    };

    const server = net.createServer({ noDelay: true }, (inbound) => {
        const entry = {
            n: log.length + 1, request: undefined, response: undefined, closed: false,
            openedAt: Date.now() - startedAt, answeredAt: undefined, closedAt: undefined,
        };
        log.push(entry);
        const pair = { inbound, outbound: undefined, held: { toServer: [], toClient: [] } };
        live.add(pair);
        const pending = [];
        const sniffRequest = firstLine(entry, "request");
        const onEarlyData = (chunk) => {
            sniffRequest(chunk);
            pending.push(chunk);
        };
        inbound.on("data", onEarlyData);
        inbound.on("error", () => {});
        inbound.on("close", () => {
            entry.closed = true;
            entry.closedAt = Date.now() - startedAt;
            if (pair.outbound && !pair.outbound.destroyed && !orphans.has(pair.outbound)) {
                pair.outbound.destroy();
            }
            live.delete(pair);
        });

        const forward = () => {
            if (inbound.destroyed) {
                return;
            }
            const outbound = net.connect({ host, port, noDelay: true });
            pair.outbound = outbound;
            outbound.on("error", () => {
                if (!inbound.destroyed) {
                    inbound.resetAndDestroy();
                }
            });
            outbound.on("connect", () => {
                inbound.off("data", onEarlyData);
                for (const chunk of pending) {
                    outbound.write(chunk);
                }
                pending.length = 0;
                inbound.on("data", (chunk) => {
                    sniffRequest(chunk);
                    pass(pair, "toServer", chunk);
                });
                const sniffResponse = firstLine(entry, "response");
                outbound.on("data", (chunk) => {
                    sniffResponse(chunk);
                    pass(pair, "toClient", chunk);
                });
                inbound.on("end", () => outbound.end());
                outbound.on("end", () => inbound.end());
                outbound.on("close", () => {
                    if (!inbound.destroyed) {
                        inbound.destroy();
                    }
                });
            });
        };
        if (holding) {
            held.push(forward);
        } else {
            forward();
        }
    });

    await new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            server.off("error", reject);
            resolve();
        });
    });
    const listenPort = server.address().port;

    return {
        port: listenPort,
        /** The base URL `base` (http://HOST:PORT...) with its host and port replaced by the proxy's. */
        url(base) {
            const u = new URL(base);
            u.hostname = "127.0.0.1";
            u.port = String(listenPort);
            return u.toString().replace(/\/$/, "");
        },
        log,
        /** The log entries whose request line matches `pattern`. */
        requests(pattern) {
            return log.filter((e) => e.request !== undefined && pattern.test(e.request));
        },
        drop({ side = "both" } = {}) {
            let count = 0;
            paused.toServer = false;
            paused.toClient = false;
            for (const pair of [...live]) {
                count++;
                live.delete(pair);
                const { inbound, outbound } = pair;
                if (side === "client" && outbound && !outbound.destroyed) {
                    // Keep the server's socket open and silent; swallow whatever it still sends.
                    outbound.removeAllListeners("data");
                    outbound.removeAllListeners("end");
                    outbound.removeAllListeners("close");
                    outbound.on("data", () => {});
                    orphans.add(outbound);
                    outbound.on("close", () => orphans.delete(outbound));
                } else if (outbound && !outbound.destroyed) {
                    outbound.resetAndDestroy();
                }
                if (!inbound.destroyed) {
                    inbound.resetAndDestroy();
                }
            }
            return count;
        },
        /** Stops forwarding bytes one way ("toServer", "toClient" or "both"); the sockets stay open. */
        pause(direction = "both") {
            for (const d of directions(direction)) {
                paused[d] = true;
            }
        },
        /** Forwards again, first what was held. */
        resume(direction = "both") {
            for (const d of directions(direction)) {
                paused[d] = false;
                for (const pair of live) {
                    const chunks = pair.held[d];
                    pair.held[d] = [];
                    for (const chunk of chunks) {
                        pass(pair, d, chunk);
                    }
                }
            }
        },
        /** The bytes held so far one way (on the connections still carried). */
        held(direction) {
            return Buffer.concat([...live].flatMap((pair) => pair.held[direction]));
        },
        hold() {
            holding = true;
        },
        release() {
            holding = false;
            const waiting = held;
            held = [];
            for (const forward of waiting) {
                forward();
            }
        },
        async close() {
            holding = false;
            held = [];
            for (const { inbound, outbound } of live) {
                inbound.destroy();
                outbound?.destroy();
            }
            for (const socket of orphans) {
                socket.destroy();
            }
            live.clear();
            await new Promise((resolve) => server.close(() => resolve()));
        },
    };
}
