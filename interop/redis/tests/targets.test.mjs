// Every target kind of the ChatHub across servers sharing one Redis, with the official JavaScript
// client in both protocols: two servers on WebSockets, two servers on Server-Sent Events and long
// polling, three servers on WebSockets. The servers are REDIS_SERVERS (see lib/procs.mjs).

import { after, before, test } from "node:test";

import { JsChatClient } from "../lib/clients.mjs";
import { kindsFor, missingServers, sharedRedis, startServers } from "../lib/procs.mjs";
import { everyTargetKind, startScenarioClients, stopAll } from "../lib/scenario.mjs";

const skip = missingServers();
if (skip) {
    console.log(`# skipped: ${skip}`);
}

let redis;
before(async () => {
    if (!skip) {
        redis = await sharedRedis();
    }
});
after(async () => {
    await redis?.stop();
});

/** Runs the scenario on `n` fresh servers; `transportFor(protocol, index)` picks each client's transport. */
async function scenario(t, n, label, transportFor) {
    const servers = await startServers(kindsFor(n), redis.port);
    let clients;
    try {
        t.diagnostic(`servers: ${servers.map((s) => `${s.name} ${s.url}`).join(", ")}`);
        clients = await startScenarioClients(servers, (spec) => new JsChatClient({
            ...spec, transport: transportFor(spec.protocol, spec.index),
        }));
        await everyTargetKind(t, { servers, clients, label });
    } finally {
        if (clients) {
            await stopAll(clients.all);
        }
        await Promise.all(servers.map((s) => s.stop()));
    }
}

const TEST = { skip: skip ?? false, timeout: 180_000 };

test("two servers, WebSockets: every target kind, JSON and MessagePack clients mixed", TEST, (t) =>
    scenario(t, 2, "ws2", () => "websockets"));

test("two servers, Server-Sent Events (JSON) and long polling (MessagePack)", TEST, (t) =>
    scenario(t, 2, "sselp2", (protocol) => (protocol === "json" ? "sse" : "lp")));

test("two servers, long polling (JSON) and WebSockets (MessagePack)", TEST, (t) =>
    scenario(t, 2, "lpws2", (protocol) => (protocol === "json" ? "lp" : "websockets")));

test("three servers, WebSockets: every target kind, groups spanning every server", TEST, (t) =>
    scenario(t, 3, "ws3", () => "websockets"));
