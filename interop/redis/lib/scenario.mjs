// Exact-delivery checks and the "every target kind" scenario run by several test files.
//
// A check takes a mark of every client's event log, runs an action, waits until each client that
// must get something has got it, waits a settle time more, then compares every client's new events
// with what it must get: exactly those (as a multiset), nothing more, nothing for anyone else.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

import { REFUSE } from "./clients.mjs";
import { sleep } from "./procs.mjs";

/** How long to wait for stray deliveries after the expected ones arrived ($REDIS_SETTLE_MS). */
export const SETTLE_MS = Number(process.env.REDIS_SETTLE_MS || 300);
/** How long a delivery may take ($REDIS_DELIVERY_MS). */
export const DELIVERY_MS = Number(process.env.REDIS_DELIVERY_MS || 5_000);

export const ev = {
    receive: (user, text) => ({ target: "ReceiveMessage", args: [user, text] }),
    group: (group, text) => ({ target: "GroupMessage", args: [group, text] }),
    user: (text) => ({ target: "UserMessage", args: [text] }),
    direct: (text) => ({ target: "DirectMessage", args: [text] }),
};

const show = (e) => `${e.target}(${e.args.map((a) => JSON.stringify(a)).join(", ")})`;
const key = (e) => JSON.stringify([e.target, e.args]);
const sorted = (events) => events.map(key).sort();

/** A short random word, so that texts of one run never match another's. */
export const nonce = () => randomBytes(3).toString("hex");

/** Counts of `events` by key. */
function counts(events) {
    const map = new Map();
    for (const e of events) {
        map.set(key(e), (map.get(key(e)) ?? 0) + 1);
    }
    return map;
}

/** True when `got` holds every event of `want` at least as often. */
function covers(got, want) {
    const have = counts(got);
    for (const [k, n] of counts(want)) {
        if ((have.get(k) ?? 0) < n) {
            return false;
        }
    }
    return true;
}

/**
 * Runs `action` and checks what every client received because of it.
 * @param {string} what a description for the messages, e.g. "SendToGroup g1 by j0".
 * @param {object[]} clients every client of the test (the ones that must get nothing too).
 * @param {() => Promise<unknown>} action
 * @param {Map<object, object[]>} expected client -> the events it must get.
 * @returns {Promise<unknown>} the action's result.
 */
export async function expectDeliveries(what, clients, action, expected) {
    const mark = new Map(clients.map((c) => [c, c.events.length]));
    const since = (c) => c.events.slice(mark.get(c));
    for (const c of expected.keys()) {
        assert.ok(mark.has(c), `${what}: ${c.label} is expected to receive but is not among the clients`);
    }
    const result = await action();
    const deadline = Date.now() + DELIVERY_MS;
    while ([...expected].some(([c, want]) => !covers(since(c), want)) && Date.now() < deadline) {
        await sleep(10);
    }
    await sleep(SETTLE_MS);
    const problems = [];
    for (const c of clients) {
        const got = since(c);
        const want = expected.get(c) ?? [];
        if (c.log.overflow > 0) {
            problems.push(`  ${c.label}: more than the event cap arrived (${c.log.overflow} dropped)`);
        }
        try {
            assert.deepEqual(sorted(got), sorted(want));
        } catch {
            const wantText = want.length ? want.map(show).join(", ") : "nothing";
            const gotText = got.length ? got.map(show).join(", ") : "nothing";
            problems.push(`  ${c.label}: must get ${wantText}; got ${gotText}`);
        }
    }
    assert.ok(problems.length === 0,
        `${what}: wrong deliveries (waited up to ${DELIVERY_MS} ms, then ${SETTLE_MS} ms more):\n${problems.join("\n")}`);
    return result;
}

/** A Map giving `event` to each of `clients`. */
export function each(clients, event) {
    return new Map(clients.map((c) => [c, [event]]));
}

/**
 * Starts the scenario's clients: on each server i, `j<i>` (JSON) and `m<i>` (MessagePack); plus
 * user "una" connected twice, as `una-0` on the first server (MessagePack) and `una-<n-1>` on the
 * last (JSON).
 * @param {object[]} servers
 * @param {(spec: { name, user, server, index, protocol }) => object} makeClient builds (does not
 *   start) a client, choosing its kind and transport.
 */
export async function startScenarioClients(servers, makeClient) {
    const n = servers.length;
    const perServer = [];
    const all = [];
    const start = async (spec) => {
        const client = makeClient(spec);
        all.push(client);
        await client.start();
        return client;
    };
    try {
        for (const [index, server] of servers.entries()) {
            perServer.push({
                json: await start({ name: `j${index}`, user: `j${index}`, server, index, protocol: "json" }),
                mp: await start({ name: `m${index}`, user: `m${index}`, server, index, protocol: "messagepack" }),
            });
        }
        const una = [
            await start({ name: "una-0", user: "una", server: servers[0], index: 0, protocol: "messagepack" }),
            await start({ name: `una-${n - 1}`, user: "una", server: servers[n - 1], index: n - 1, protocol: "json" }),
        ];
        return { perServer, una, all };
    } catch (err) {
        await Promise.all(all.map((c) => c.stop()));
        throw err;
    }
}

/**
 * Every target kind of the ChatHub across servers. For each i, the caller on server i targets a
 * client on server (i + 1) % n; the protocols alternate (JSON caller to MessagePack target, then the
 * reverse). Group members on the remaining servers make a group span every server.
 * @param {import("node:test").TestContext} t
 * @param {{ servers: object[], clients: Awaited<ReturnType<typeof startScenarioClients>>, label: string }} setup
 */
export async function everyTargetKind(t, { servers, clients, label }) {
    const n = servers.length;
    const { perServer, una, all } = clients;
    const run = `${label}-${nonce()}`;

    // Identity, on every client that can ask.
    for (const c of all) {
        if (!c.supports("GetConnectionId")) {
            continue;
        }
        assert.equal(await c.call("GetConnectionId"), c.id, `${c.label}: GetConnectionId() must be its own connection id`);
        assert.equal(await c.call("GetUserIdentifier"), c.user, `${c.label}: GetUserIdentifier() must be its user query parameter`);
    }
    if (all.some((c) => !c.supports("GetConnectionId"))) {
        t.diagnostic("GetConnectionId/GetUserIdentifier: the .NET chat-client has no command for them; checked on the JS clients");
    }
    const ids = new Set(all.map((c) => c.id));
    assert.equal(ids.size, all.length, `connection ids must be distinct across servers: ${all.map((c) => c.id).join(", ")}`);

    for (let i = 0; i < n; i++) {
        const j = (i + 1) % n;
        const flip = i % 2 === 1;
        const caller = flip ? perServer[i].mp : perServer[i].json;
        const other = flip ? perServer[i].json : perServer[i].mp; // the caller's neighbour on server i
        const target = flip ? perServer[j].json : perServer[j].mp;
        const thirds = perServer.filter((_, k) => k !== i && k !== j).map((s) => s.json);
        const tag = `${run}-${i}to${j}`;
        const by = `${caller.label} -> ${target.label}`;
        const everyoneBut = (...not) => all.filter((c) => !not.includes(c));

        // All / Others / AllExcept.
        await expectDeliveries(`SendMessage by ${caller.label}`, all,
            () => caller.call("SendMessage", caller.name, `${tag}-all`),
            each(all, ev.receive(caller.name, `${tag}-all`)));
        await expectDeliveries(`SendToOthers by ${caller.label}`, all,
            () => caller.call("SendToOthers", caller.name, `${tag}-others`),
            each(everyoneBut(caller), ev.receive(caller.name, `${tag}-others`)));
        await expectDeliveries(`SendAllExcept ${by}`, all,
            () => caller.call("SendAllExcept", target.id, `${tag}-allexcept`),
            each(everyoneBut(target), ev.receive("all-except", `${tag}-allexcept`)));

        // A group joined on another server, then one with a member on every server.
        const g = `${tag}-g`;
        await expectDeliveries(`JoinGroup ${g} by ${target.label}`, all, () => target.call("JoinGroup", g), new Map());
        await expectDeliveries(`SendToGroup ${g} by ${caller.label} (member: ${target.label})`, all,
            () => caller.call("SendToGroup", g, `${tag}-group1`),
            each([target], ev.group(g, `${tag}-group1`)));
        const members = [target, other, ...thirds];
        for (const m of [other, ...thirds]) {
            await m.call("JoinGroup", g);
        }
        await expectDeliveries(`SendToGroup ${g} by ${caller.label} (members on ${n} servers)`, all,
            () => caller.call("SendToGroup", g, `${tag}-group2`),
            each(members, ev.group(g, `${tag}-group2`)));
        if (caller.supports("SendToGroupExcept")) {
            await expectDeliveries(`SendToGroupExcept ${g} but ${target.label}, by ${caller.label}`, all,
                () => caller.call("SendToGroupExcept", g, target.id, `${tag}-groupexcept`),
                each(members.filter((m) => m !== target), ev.group(g, `${tag}-groupexcept`)));
            await expectDeliveries(`SendToGroupExcept ${g} but ${other.label}, by ${caller.label}`, all,
                () => caller.call("SendToGroupExcept", g, other.id, `${tag}-groupexcept2`),
                each(members.filter((m) => m !== other), ev.group(g, `${tag}-groupexcept2`)));
        } else {
            t.diagnostic(`SendToGroupExcept: ${caller.label} has no command for it; checked with the other callers`);
        }
        await expectDeliveries(`LeaveGroup ${g} by ${target.label}`, all, () => target.call("LeaveGroup", g), new Map());
        await expectDeliveries(`SendToGroup ${g} by ${caller.label} after ${target.label} left`, all,
            () => caller.call("SendToGroup", g, `${tag}-group3`),
            each(members.filter((m) => m !== target), ev.group(g, `${tag}-group3`)));
        for (const m of [other, ...thirds]) {
            await m.call("LeaveGroup", g);
        }
        await expectDeliveries(`SendToGroup ${g} by ${caller.label} after everyone left`, all,
            () => caller.call("SendToGroup", g, `${tag}-group4`), new Map());

        // Users: "una" on the first and the last server; a plain user on one.
        await expectDeliveries(`SendToUser una by ${caller.label}`, all,
            () => caller.call("SendToUser", "una", `${tag}-una`),
            each(una, ev.user(`${tag}-una`)));
        await expectDeliveries(`SendToUser ${target.user} by ${caller.label}`, all,
            () => caller.call("SendToUser", target.user, `${tag}-user`),
            each([target], ev.user(`${tag}-user`)));

        // One connection on another server.
        await expectDeliveries(`SendToConnection ${by}`, all,
            () => caller.call("SendToConnection", target.id, `${tag}-direct`),
            each([target], ev.direct(`${tag}-direct`)));

        // AddToGroup of a connection on another server: the call completes once the owner has
        // applied it, so the very next group send must reach it.
        const g2 = `${tag}-added`;
        await expectDeliveries(`AddToGroup ${target.label} to ${g2}, by ${caller.label}`, all,
            () => caller.call("AddToGroup", target.id, g2), new Map());
        await expectDeliveries(`SendToGroup ${g2} by ${caller.label} right after AddToGroup`, all,
            () => caller.call("SendToGroup", g2, `${tag}-added1`),
            each([target], ev.group(g2, `${tag}-added1`)));
        await expectDeliveries(`SendToGroup ${g2} by ${other.label}`, all,
            () => other.call("SendToGroup", g2, `${tag}-added2`),
            each([target], ev.group(g2, `${tag}-added2`)));
        await target.call("LeaveGroup", g2);
        await expectDeliveries(`SendToGroup ${g2} by ${caller.label} after ${target.label} left`, all,
            () => caller.call("SendToGroup", g2, `${tag}-added3`), new Map());

        // Client results across servers (and nothing else sent to anyone).
        const question = `${tag}-q`;
        const answer = await expectDeliveries(`AskClient ${by}`, all,
            () => caller.call("AskClient", target.id, question), new Map());
        assert.equal(answer, `${target.name} answers ${question}`,
            `AskClient ${by}: the answer must be the target's GetAnswer result`);
        if (target.kind === "js") {
            // The client's error travels back through Redis as an error completion.
            const refused = `${tag}-q${REFUSE}`;
            await assert.rejects(caller.call("AskClient", target.id, refused),
                (err) => err.message.includes(`${target.name} refuses ${refused}`),
                `AskClient ${by}: a GetAnswer that throws must fail the call with the client's error text`);
        }
        // No server owns this id: the invoking server learns it at once (nobody is subscribed to
        // the connection's channel) instead of waiting for the hub's 10 s timeout.
        const nobody = `nobody${tag.replace(/[^A-Za-z0-9]/g, "")}`;
        const started = Date.now();
        await assert.rejects(caller.call("AskClient", nobody, `${tag}-q2`),
            (err) => err.message.includes(`Connection '${nobody}' does not exist.`),
            `AskClient ${caller.label} -> an unknown connection id must fail with "Connection '<id>' does not exist."`);
        const took = Date.now() - started;
        assert.ok(took < 3_000, `AskClient ${caller.label} -> an unknown connection id failed after ${took} ms, not at once`);
    }
}

/** Stops clients quietly. */
export async function stopAll(clients) {
    await Promise.all(clients.map((c) => c.stop()));
}
