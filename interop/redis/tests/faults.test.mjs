// Faults: Redis restarting under traffic, and one server of three dying. Each test has its own
// redis-server (it kills it) and its own servers.

import assert from "node:assert/strict";
import { test } from "node:test";

import { JsChatClient, waitFor, withTimeout } from "../lib/clients.mjs";
import { kindsFor, missingServers, sleep, startRedis, startServers } from "../lib/procs.mjs";
import {
    each, ev, everyTargetKind, expectDeliveries, nonce, startScenarioClients, stopAll,
} from "../lib/scenario.mjs";

const skip = missingServers();
if (skip) {
    console.log(`# skipped: ${skip}`);
}

/** How long deliveries may take to resume after Redis is back ($REDIS_RESUME_MS). */
const RESUME_MS = Number(process.env.REDIS_RESUME_MS || 10_000);
const SEND_EVERY_MS = 50;

/**
 * Sends SendMessage(name, "<label>-<seq>") every 50 ms without waiting for the previous call, and
 * keeps each call's outcome.
 */
function traffic(sender, label) {
    const sent = [];
    let seq = 0;
    const timer = setInterval(() => {
        const record = { seq: ++seq, at: Date.now(), done: undefined, error: undefined };
        sent.push(record);
        sender.call("SendMessage", sender.name, `${label}-${record.seq}`).then(
            () => { record.done = Date.now(); },
            (err) => { record.done = Date.now(); record.error = err.message; });
    }, SEND_EVERY_MS);
    return {
        label,
        sent,
        stop: () => clearInterval(timer),
        pending: () => sent.filter((r) => r.done === undefined).length,
        failed: () => sent.filter((r) => r.error !== undefined),
    };
}

/** Sequence numbers of `flow`'s messages that `client` received, in arrival order. */
function received(client, flow) {
    const prefix = `${flow.label}-`;
    return client.events
        .filter((e) => e.target === "ReceiveMessage" && typeof e.args[1] === "string" && e.args[1].startsWith(prefix))
        .map((e) => Number(e.args[1].slice(prefix.length)));
}

/** Waits until no client has received anything for `quietMs` (at most `ms`). */
async function quiet(clients, quietMs, ms) {
    const deadline = Date.now() + ms;
    let last = clients.map((c) => c.events.length).join();
    let since = Date.now();
    while (Date.now() - since < quietMs) {
        assert.ok(Date.now() < deadline, `deliveries did not stop within ${ms} ms after the traffic stopped`);
        await sleep(50);
        const now = clients.map((c) => c.events.length).join();
        if (now !== last) {
            last = now;
            since = Date.now();
        }
    }
}

test("Redis restarts during traffic: deliveries resume, the servers and clients stay up, subscriptions come back",
    { skip: skip ?? false, timeout: 120_000 }, async (t) => {
        let redis = await startRedis();
        const port = redis.port;
        const servers = await startServers(kindsFor(2), port);
        const [A, B] = servers;
        const clients = [];
        const start = async (spec) => {
            const c = new JsChatClient(spec);
            clients.push(c);
            return c.start();
        };
        try {
            t.diagnostic(`redis on ${port}; servers: ${servers.map((s) => `${s.name} ${s.url}`).join(", ")}`);
            const sendA = await start({ name: "sendA", server: A });
            const sendB = await start({ name: "sendB", server: B, protocol: "messagepack" });
            const onA = await start({ name: "onA", server: A, protocol: "messagepack" });
            const onB = await start({ name: "onB", server: B });
            const g = `kept-${nonce()}`;
            // Subscriptions made before the outage: a group joined on each side.
            await onA.call("JoinGroup", g);
            await onB.call("JoinGroup", g);

            const flowA = traffic(sendA, `fromA-${nonce()}`);
            const flowB = traffic(sendB, `fromB-${nonce()}`);
            let stopped = false;
            const stopTraffic = () => {
                if (!stopped) {
                    stopped = true;
                    flowA.stop();
                    flowB.stop();
                }
            };
            try {
                // Traffic flows both ways before the fault.
                await waitFor(() => received(onB, flowA).length >= 5 && received(onA, flowB).length >= 5, 5_000,
                    "5 messages each way across the servers before the restart");

                await redis.stop("SIGKILL");
                const killedAt = Date.now();
                const seqAtKill = { A: flowA.sent.length, B: flowB.sent.length };
                await sleep(1_000);
                redis = await startRedis(port);
                const restartedAt = Date.now();
                const seqAtRestart = { A: flowA.sent.length, B: flowB.sent.length };
                t.diagnostic(`redis killed, restarted on ${port} after ${restartedAt - killedAt} ms`);

                // Deliveries resume: a message sent after the restart arrives on the other server.
                const resumed = (client, flow, after) => received(client, flow).some((s) => s > after);
                await waitFor(() => resumed(onB, flowA, seqAtRestart.A) && resumed(onA, flowB, seqAtRestart.B),
                    RESUME_MS, `a message sent after the restart to arrive on the other server (each way)`);
                const resumeMs = Date.now() - restartedAt;
                // Keep sending a little longer, then stop and let everything settle.
                await sleep(500);
                stopTraffic();
                await waitFor(() => flowA.pending() === 0 && flowB.pending() === 0, 20_000,
                    "every SendMessage call to complete or fail");
                await quiet(clients, 1_000, 20_000);

                t.diagnostic(`deliveries resumed ${resumeMs} ms after the restart`);
                for (const [flow, from, to, name] of [[flowA, seqAtKill.A, seqAtRestart.A, "A"], [flowB, seqAtKill.B, seqAtRestart.B, "B"]]) {
                    const outage = (client) => received(client, flow).filter((s) => s > from && s <= to).length;
                    t.diagnostic(`from ${name}: ${flow.sent.length} sent, ${flow.failed().length} calls failed; ` +
                        `of the ${to - from} sent while Redis was down, ${outage(onA)} reached onA and ${outage(onB)} onB`);
                }
                const errors = [...new Set([...flowA.failed(), ...flowB.failed()].map((r) => r.error))];
                if (errors.length) {
                    t.diagnostic(`send errors: ${errors.slice(0, 3).join(" | ")}`);
                }

                // Nothing arrives twice, and everything sent before the kill arrived.
                for (const [client, flow, killSeq] of [[onB, flowA, seqAtKill.A], [onA, flowB, seqAtKill.B],
                    [onA, flowA, seqAtKill.A], [onB, flowB, seqAtKill.B]]) {
                    const seqs = received(client, flow);
                    assert.equal(new Set(seqs).size, seqs.length, `${client.label}: a message of ${flow.label} arrived twice`);
                    // The last few before the kill may have been in flight when Redis died.
                    const early = Math.max(0, killSeq - 10);
                    const before = seqs.filter((s) => s <= early).length;
                    assert.equal(before, early,
                        `${client.label}: of ${flow.label}'s first ${early} messages (sent well before the kill) only ${before} arrived`);
                }
                // Calls sent after deliveries resumed succeeded.
                const resumedFrom = restartedAt + resumeMs;
                const lateFailures = [...flowA.sent, ...flowB.sent].filter((r) => r.at > resumedFrom && r.error);
                assert.deepEqual(lateFailures.map((r) => r.error), [], "SendMessage calls made after deliveries resumed must succeed");
            } finally {
                stopTraffic();
            }

            // The servers and their clients survived.
            for (const s of servers) {
                assert.ok(!s.exited(), `${s.name} must keep running through the Redis restart; its output:\n${s.log()}`);
            }
            for (const c of clients) {
                assert.ok(c.connected, `${c.label} must stay connected through the Redis restart`);
            }

            // Subscriptions are back: all, a group joined before the outage, a user, a connection, a client result.
            const tag = `after-${nonce()}`;
            await expectDeliveries("SendMessage after the restart", clients,
                () => sendA.call("SendMessage", "sendA", `${tag}-all`), each(clients, ev.receive("sendA", `${tag}-all`)));
            await expectDeliveries(`SendToGroup ${g} (joined before the outage) after the restart`, clients,
                () => sendB.call("SendToGroup", g, `${tag}-group`), each([onA, onB], ev.group(g, `${tag}-group`)));
            await expectDeliveries("SendToUser onB after the restart", clients,
                () => sendA.call("SendToUser", "onB", `${tag}-user`), each([onB], ev.user(`${tag}-user`)));
            await expectDeliveries("SendToConnection onA after the restart", clients,
                () => sendB.call("SendToConnection", onA.id, `${tag}-direct`), each([onA], ev.direct(`${tag}-direct`)));
            assert.equal(await sendA.call("AskClient", onB.id, `${tag}-q`), `onB answers ${tag}-q`,
                "AskClient across servers after the restart");
            // A group joined after the restart (a fresh subscription and, for a remote add, an ack).
            const g2 = `new-${nonce()}`;
            await sendA.call("AddToGroup", onB.id, g2);
            await expectDeliveries(`SendToGroup ${g2} (remote AddToGroup after the restart)`, clients,
                () => sendA.call("SendToGroup", g2, `${tag}-group2`), each([onB], ev.group(g2, `${tag}-group2`)));
        } finally {
            await stopAll(clients);
            await Promise.all(servers.map((s) => s.stop()));
            await redis.stop();
        }
    });

test("Redis down for longer (7 s): calls that need it settle in bounded time, nobody is disconnected, all works after",
    { skip: skip ?? false, timeout: 120_000 }, async (t) => {
        let redis = await startRedis();
        const port = redis.port;
        const servers = await startServers(kindsFor(2), port);
        const [A, B] = servers;
        const clients = [];
        try {
            for (const [name, server, protocol] of [["a", A, "json"], ["b", B, "messagepack"]]) {
                const c = new JsChatClient({ name, server, protocol });
                clients.push(c);
                await c.start();
            }
            const [a, b] = clients;
            await redis.stop("SIGKILL");
            const downAt = Date.now();
            const tag = `down-${nonce()}`;
            const outcome = (what, promise) => promise.then(
                (value) => ({ what, ms: Date.now() - downAt, ok: true, value }),
                (err) => ({ what, ms: Date.now() - downAt, ok: false, error: err.message }));
            // Every call that has to go through Redis, made while it is down.
            const calls = Promise.all([
                outcome("SendMessage", a.call("SendMessage", "a", `${tag}-all`)),
                outcome("JoinGroup", a.call("JoinGroup", `${tag}-g`)),
                outcome("AddToGroup (remote)", a.call("AddToGroup", b.id, `${tag}-g2`)),
                outcome("SendToConnection (remote)", a.call("SendToConnection", b.id, `${tag}-direct`)),
                outcome("AskClient (remote)", a.call("AskClient", b.id, `${tag}-q`)),
            ]);
            await sleep(7_000);
            redis = await startRedis(port);
            const restartedAt = Date.now();
            const results = await withTimeout(calls, 15_000, "the calls made while Redis was down");
            for (const r of results) {
                t.diagnostic(`${r.what} while Redis was down: ${r.ok ? "completed" : `failed (${r.error.slice(0, 160)})`} after ${r.ms} ms`);
            }
            for (const s of servers) {
                assert.ok(!s.exited(), `${s.name} must keep running while Redis is down; its output:\n${s.log()}`);
            }
            for (const c of clients) {
                assert.ok(c.connected, `${c.label} must stay connected while Redis is down`);
            }
            // Back to normal once the servers have reconnected: probe each way until a message
            // arrives (a probe may fail while a server is still reconnecting).
            const tag2 = `back-${nonce()}`;
            const deadline = restartedAt + RESUME_MS;
            let seq = 0;
            for (const [from, to] of [[a, b], [b, a]]) {
                for (;;) {
                    const text = `${tag2}-${from.name}-${++seq}`;
                    const failed = await from.call("SendMessage", from.name, text).then(() => null, (err) => err.message);
                    await sleep(200);
                    if (to.events.some((e) => e.args[1] === text)) {
                        break;
                    }
                    assert.ok(Date.now() < deadline, `no delivery ${from.label} -> ${to.label} within ${RESUME_MS} ms ` +
                        `after Redis came back${failed ? ` (last call failed: ${failed})` : ""}`);
                }
                t.diagnostic(`${from.name} -> ${to.name} resumed ${Date.now() - restartedAt} ms after Redis came back`);
            }
            await quiet(clients, 500, 10_000);
            await expectDeliveries("SendMessage after the long outage", clients,
                () => b.call("SendMessage", "b", `${tag2}-all`), each(clients, ev.receive("b", `${tag2}-all`)));
            await a.call("AddToGroup", b.id, `${tag2}-g`);
            await expectDeliveries("SendToGroup after a remote AddToGroup after the long outage", clients,
                () => a.call("SendToGroup", `${tag2}-g`, `${tag2}-group`), each([b], ev.group(`${tag2}-g`, `${tag2}-group`)));
            assert.equal(await b.call("AskClient", a.id, `${tag2}-q`), `a answers ${tag2}-q`, "AskClient after the long outage");
            // A join reported as done while Redis was down must hold once it is back.
            const joined = results.find((r) => r.what === "JoinGroup");
            if (joined.ok) {
                await expectDeliveries(`SendToGroup ${tag}-g (joined while Redis was down) from the other server`, clients,
                    () => b.call("SendToGroup", `${tag}-g`, `${tag2}-joined`), each([a], ev.group(`${tag}-g`, `${tag2}-joined`)));
            } else {
                t.diagnostic("JoinGroup failed while Redis was down, so there is no membership to check after");
            }
        } finally {
            await stopAll(clients);
            await Promise.all(servers.map((s) => s.stop()));
            await redis.stop();
        }
    });

test("one of three servers dies: the clients of the others keep reaching each other",
    { skip: skip ?? false, timeout: 180_000 }, async (t) => {
        const redis = await startRedis();
        const servers = await startServers(kindsFor(3), redis.port);
        const [A, B, C] = servers;
        let clients;
        try {
            t.diagnostic(`servers: ${servers.map((s) => `${s.name} ${s.url}`).join(", ")}`);
            clients = await startScenarioClients(servers, (spec) => new JsChatClient(spec));
            const [onA, onB, onC] = clients.perServer;
            const g = `spread-${nonce()}`;
            for (const c of [onA.json, onB.mp, onC.json]) {
                await c.call("JoinGroup", g);
            }
            const tag = `death-${nonce()}`;
            await expectDeliveries("SendToGroup on three servers before the death", clients.all,
                () => onA.mp.call("SendToGroup", g, `${tag}-before`),
                each([onA.json, onB.mp, onC.json], ev.group(g, `${tag}-before`)));

            const dead = [onC.json, onC.mp, clients.una[1]];
            await C.stop("SIGKILL");
            await withTimeout(Promise.all(dead.map((c) => c.closed)), 15_000, "the close of every client of the killed server");
            const survivors = clients.all.filter((c) => !dead.includes(c));

            await expectDeliveries("SendMessage after C died", survivors,
                () => onB.json.call("SendMessage", "j1", `${tag}-all`), each(survivors, ev.receive("j1", `${tag}-all`)));
            await expectDeliveries("SendToGroup after C died (its member is gone)", survivors,
                () => onA.mp.call("SendToGroup", g, `${tag}-group`), each([onA.json, onB.mp], ev.group(g, `${tag}-group`)));
            await expectDeliveries("SendToUser una after C died (one of its two connections was on C)", survivors,
                () => onB.json.call("SendToUser", "una", `${tag}-una`), each([clients.una[0]], ev.user(`${tag}-una`)));
            // A send to a connection of the dead server goes nowhere, and is no error.
            await expectDeliveries("SendToConnection to a connection of the dead server", survivors,
                () => onA.json.call("SendToConnection", onC.json.id, `${tag}-void`), new Map());
            await assert.rejects(onA.json.call("AskClient", onC.mp.id, `${tag}-q`),
                (err) => err.message.includes(`Connection '${onC.mp.id}' does not exist.`),
                "AskClient to a connection of the dead server must fail: nobody owns it any more");

            // And every target kind between the two survivors.
            await everyTargetKind(t, {
                servers: [A, B],
                clients: { perServer: [onA, onB], una: [clients.una[0]], all: survivors },
                label: "survivors",
            });
            for (const s of [A, B]) {
                assert.ok(!s.exited(), `${s.name} must keep running when another server dies`);
            }
        } finally {
            if (clients) {
                await stopAll(clients.all);
            }
            await Promise.all(servers.map((s) => s.stop()));
            await redis.stop();
        }
    });
