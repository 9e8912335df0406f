// The official .NET client (`dotnet-peer chat-client`) on one server and the official JS client on
// another, sharing one Redis: every target kind in both directions, including client results asked
// by the .NET client of a JS client and by a JS client of the .NET client.

import { after, before, test } from "node:test";

import { DotnetChatClient, JsChatClient } from "../lib/clients.mjs";
import { dotnetPeer, havePeers, kindsFor, missingServers, sharedRedis, startServers } from "../lib/procs.mjs";
import { everyTargetKind, startScenarioClients, stopAll } from "../lib/scenario.mjs";

const skip = missingServers() ??
    (havePeers ? null : `the .NET peers are not here (${dotnetPeer}): no official .NET client to run`);
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

/** Two servers; the clients of server `dotnetIndex` are .NET chat-clients, the others JS clients. */
async function mixed(t, dotnetIndex, label) {
    const servers = await startServers(kindsFor(2), redis.port);
    let clients;
    try {
        t.diagnostic(`servers: ${servers.map((s) => `${s.name} ${s.url}`).join(", ")}`);
        clients = await startScenarioClients(servers, (spec) => (spec.index === dotnetIndex
            ? new DotnetChatClient(spec)
            : new JsChatClient(spec)));
        await everyTargetKind(t, { servers, clients, label });
    } finally {
        if (clients) {
            await stopAll(clients.all);
        }
        await Promise.all(servers.map((s) => s.stop()));
    }
}

const TEST = { skip: skip ?? false, timeout: 180_000 };

test(".NET clients on the first server, JS clients on the second", TEST, (t) => mixed(t, 0, "net0"));

test("JS clients on the first server, .NET clients on the second", TEST, (t) => mixed(t, 1, "net1"));
