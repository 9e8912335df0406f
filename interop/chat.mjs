#!/usr/bin/env node
// Smoke test: `node chat.mjs [baseUrl]` (default http://127.0.0.1:5000).
// Connects "alice" and "bob" to <baseUrl>/chat with the official client, alice calls
// SendMessage("alice", "hello from node") and bob must receive ReceiveMessage with
// exactly those arguments. Exit 0 on success, 1 on failure or after 10 s.

import * as signalR from "@microsoft/signalr";

const baseUrl = (process.argv[2] ?? "http://127.0.0.1:5000").replace(/\/+$/, "");
const hubUrl = `${baseUrl}/chat`;
const USER = "alice";
const MESSAGE = "hello from node";
const TIMEOUT_MS = 10_000;

function connect() {
    return new signalR.HubConnectionBuilder()
        .withUrl(hubUrl)
        .configureLogging(signalR.LogLevel.Warning)
        .build();
}

const alice = connect();
const bob = connect();

// Best-effort stop of both clients, bounded so a hung server cannot keep us alive.
async function stopAll() {
    await Promise.race([
        Promise.allSettled([alice.stop(), bob.stop()]),
        new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
    ]);
}

const timer = setTimeout(async () => {
    console.error(`chat.mjs: timed out after ${TIMEOUT_MS / 1000} s (hub ${hubUrl})`);
    await stopAll();
    process.exit(1);
}, TIMEOUT_MS);

try {
    // Resolves on the first ReceiveMessage(USER, MESSAGE); anything else is printed and ignored.
    const bobReceived = new Promise((resolve) => {
        bob.on("ReceiveMessage", (...args) => {
            console.log(`bob received ReceiveMessage(${args.map((a) => JSON.stringify(a)).join(", ")})`);
            if (args.length === 2 && args[0] === USER && args[1] === MESSAGE) {
                resolve();
            }
        });
    });
    // ReceiveMessage goes to every connection, alice included.
    alice.on("ReceiveMessage", () => {});
    await Promise.all([alice.start(), bob.start()]);
    await alice.invoke("SendMessage", USER, MESSAGE);
    await bobReceived;
    clearTimeout(timer);
    await stopAll();
    process.exit(0);
} catch (error) {
    clearTimeout(timer);
    console.error(`chat.mjs: failed against ${hubUrl}: ${error && error.message ? error.message : error}`);
    await stopAll();
    process.exit(1);
}
