// The channel prefix (--redis-prefix): servers with the same prefix form one backplane, a server
// without it shares the Redis but none of the messages; every channel of a prefixed server starts
// with the prefix bytes, with no separator added.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { JsChatClient } from "../lib/clients.mjs";
import { kindsFor, missingServers, redisCli, sharedRedis, startHubServer } from "../lib/procs.mjs";
import { each, ev, expectDeliveries, nonce, stopAll } from "../lib/scenario.mjs";

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

const HUB = "Peer.ChatHub";

test("servers sharing a channel prefix reach each other and nobody else on the same Redis",
    { skip: skip ?? false, timeout: 120_000 }, async (t) => {
        const prefix = `pfx${nonce()}-`;
        const [k1, k2, k3] = kindsFor(3);
        const servers = [];
        const clients = [];
        try {
            servers.push(await startHubServer(k1, redis.port, { prefix, name: `P1(${k1})` }));
            servers.push(await startHubServer(k2, redis.port, { prefix, name: `P2(${k2})` }));
            servers.push(await startHubServer(k3, redis.port, { name: `N(${k3}, no prefix)` }));
            const [p1, p2, plain] = servers;
            t.diagnostic(`prefix ${prefix}; servers: ${servers.map((s) => `${s.name} ${s.url}`).join(", ")}`);
            for (const [name, server, protocol] of [["pa", p1, "json"], ["pb", p2, "messagepack"], ["nc", plain, "json"]]) {
                const c = new JsChatClient({ name, server, protocol });
                clients.push(c);
                await c.start();
            }
            const [pa, pb, nc] = clients;
            const tag = `prefix-${nonce()}`;

            await expectDeliveries("SendMessage on a prefixed server", clients,
                () => pa.call("SendMessage", "pa", `${tag}-1`), each([pa, pb], ev.receive("pa", `${tag}-1`)));
            await expectDeliveries("SendMessage on the server without the prefix", clients,
                () => nc.call("SendMessage", "nc", `${tag}-2`), each([nc], ev.receive("nc", `${tag}-2`)));
            const g = `${tag}-g`;
            await pb.call("AddToGroup", pa.id, g);
            await expectDeliveries("SendToGroup after a remote AddToGroup between prefixed servers", clients,
                () => pb.call("SendToGroup", g, `${tag}-3`), each([pa], ev.group(g, `${tag}-3`)));
            await expectDeliveries("SendToConnection from the server without the prefix to a prefixed one", clients,
                () => nc.call("SendToConnection", pa.id, `${tag}-4`), new Map());
            assert.equal(await pa.call("AskClient", pb.id, `${tag}-q`), `pb answers ${tag}-q`,
                "AskClient between servers with the same prefix");
            await assert.rejects(pa.call("AskClient", nc.id, `${tag}-q2`),
                (err) => err.message.includes(`Connection '${nc.id}' does not exist.`),
                "AskClient from a prefixed server to a connection of the server without the prefix must not find it");

            // On the wire: the prefix, then the hub name, with nothing between.
            const channels = new Set(await redisCli(redis.port, "PUBSUB", "CHANNELS", `*${HUB}:*`));
            for (const c of [pa, pb]) {
                assert.ok(channels.has(`${prefix}${HUB}:connection:${c.id}`),
                    `${c.label}: channel ${prefix}${HUB}:connection:${c.id} must be subscribed; have:\n${[...channels].join("\n")}`);
                assert.ok(!channels.has(`${HUB}:connection:${c.id}`), `${c.label}: its connection channel must carry the prefix`);
            }
            assert.ok(channels.has(`${HUB}:connection:${nc.id}`), `${nc.label}: its connection channel has no prefix`);
            assert.ok(channels.has(`${prefix}${HUB}:group:${g}`), `the group ${g} is subscribed with the prefix`);
            const [, prefixedAll, , plainAll] = await redisCli(redis.port, "PUBSUB", "NUMSUB", `${prefix}${HUB}:all`, `${HUB}:all`);
            assert.equal(Number(prefixedAll), 2, `${prefix}${HUB}:all must have one subscriber per prefixed server`);
            assert.ok(Number(plainAll) >= 1, `${HUB}:all must be subscribed by the server without the prefix`);
        } finally {
            await stopAll(clients);
            await Promise.all(servers.map((s) => s.stop()));
        }
    });
