// Chat clients of the ChatHub contract, one interface over two official clients:
//   JsChatClient      @microsoft/signalr (+ the MessagePack protocol) in this process;
//   DotnetChatClient  `dotnet-peer chat-client`, the official .NET client, driven line by line.
//
// Both record the hub events they receive as { target, args } in `events` (ReceiveMessage,
// GroupMessage, UserMessage, DirectMessage) and answer the client-result call GetAnswer(q) with
// `${name} answers ${q}` (a JS client throws instead when q ends with REFUSE). `call(method, ...args)` invokes a ChatHub method and resolves with its
// result once the server has completed it.

import { spawn } from "node:child_process";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

import { dotnetPeer, track } from "./procs.mjs";

export { signalR };

const START_MS = 20_000;
const CALL_MS = 15_000;
const STOP_MS = 5_000;
/** A client records at most this many events; more is a failure of the test that floods it. */
const MAX_EVENTS = 20_000;

/** A JS client's GetAnswer throws for a question ending with this (the .NET chat-client always answers). */
export const REFUSE = "-refuse";

const EVENT_TARGETS = ["ReceiveMessage", "GroupMessage", "UserMessage", "DirectMessage"];

/** Rejects with a descriptive error if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not complete within ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `predicate` every 10 ms until it is truthy; throws after `ms`. */
export async function waitFor(predicate, ms, what) {
    const deadline = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
    }
}

export const TRANSPORTS = {
    websockets: signalR.HttpTransportType.WebSockets,
    sse: signalR.HttpTransportType.ServerSentEvents,
    lp: signalR.HttpTransportType.LongPolling,
};

const logLevel = (() => {
    const name = process.env.SIGNALR_LOG_LEVEL;
    return name && Object.prototype.hasOwnProperty.call(signalR.LogLevel, name)
        ? signalR.LogLevel[name]
        : signalR.LogLevel.None;
})();

class EventLog {
    constructor() {
        this.events = [];
        this.overflow = 0;
    }

    push(target, args) {
        if (this.events.length >= MAX_EVENTS) {
            this.overflow++;
            return;
        }
        this.events.push({ target, args });
    }
}

/**
 * The official JavaScript client.
 * @param {{ name: string, user?: string, server: { name: string, hubUrl: (q?: string) => string },
 *   protocol?: "json" | "messagepack", transport?: "websockets" | "sse" | "lp" }} spec
 */
export class JsChatClient {
    constructor({ name, user = name, server, protocol = "json", transport = "websockets" }) {
        if (transport === "sse" && protocol === "messagepack") {
            throw new Error("Server-Sent Events carry text only: MessagePack needs WebSockets or long polling");
        }
        this.kind = "js";
        this.name = name;
        this.user = user;
        this.server = server;
        this.protocol = protocol;
        this.transport = transport;
        this.label = `${name} (js ${protocol} ${transport} on ${server.name})`;
        this.log = new EventLog();
        this.closedWith = undefined;
        this.connection = new signalR.HubConnectionBuilder()
            .withUrl(server.hubUrl(`?user=${encodeURIComponent(user)}`), { transport: TRANSPORTS[transport] })
            .withHubProtocol(protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
            .configureLogging(logLevel)
            .build();
        this.closed = new Promise((resolve) => this.connection.onclose((error) => {
            this.closedWith = error ?? null;
            resolve(error);
        }));
        for (const target of EVENT_TARGETS) {
            this.connection.on(target, (...args) => this.log.push(target, args));
        }
        this.answered = [];
        this.connection.on("GetAnswer", (question) => {
            this.answered.push(question);
            if (String(question).endsWith(REFUSE)) {
                throw new Error(`${this.name} refuses ${question}`);
            }
            return `${this.name} answers ${question}`;
        });
    }

    get events() {
        return this.log.events;
    }

    /** Connection id (after start; kept after the connection closes). */
    get id() {
        return this.connectionId ?? this.connection.connectionId;
    }

    supports() {
        return true;
    }

    async start() {
        await withTimeout(this.connection.start(), START_MS, `start of ${this.label}`);
        this.connectionId = this.connection.connectionId;
        // start() resolves at the handshake, possibly before the server has registered the
        // connection with the backplane (its Redis subscriptions); a server runs hub methods
        // only after that, so a completed call means the connection is fully there.
        const id = await this.call("GetConnectionId");
        if (id !== this.connectionId) {
            throw new Error(`${this.label}: GetConnectionId() answered ${JSON.stringify(id)}, not its connection id ${this.connectionId}`);
        }
        return this;
    }

    call(method, ...args) {
        return withTimeout(this.connection.invoke(method, ...args), CALL_MS, `${this.label}: ${method}`);
    }

    /** Fire-and-forget send (no completion from the server). */
    send(method, ...args) {
        return withTimeout(this.connection.send(method, ...args), CALL_MS, `${this.label}: send ${method}`);
    }

    get connected() {
        return this.connection.state === signalR.HubConnectionState.Connected;
    }

    async stop() {
        if (this.connection.state === signalR.HubConnectionState.Disconnected) {
            return;
        }
        try {
            await withTimeout(this.connection.stop(), STOP_MS, `stop of ${this.label}`);
        } catch {
            // cleanup only
        }
    }
}

// The chat-client's line commands for the ChatHub methods it knows (it has none for
// SendToGroupExcept, GetConnectionId or GetUserIdentifier).
const DOTNET_COMMANDS = {
    SendMessage: (user, text) => `send ${user} ${text}`,
    SendToOthers: (user, text) => `others ${user} ${text}`,
    SendAllExcept: (id, text) => `allexcept ${id} ${text}`,
    JoinGroup: (group) => `group ${group}`,
    LeaveGroup: (group) => `leave ${group}`,
    AddToGroup: (id, group) => `addtogroup ${id} ${group}`,
    SendToGroup: (group, text) => `togroup ${group} ${text}`,
    SendToUser: (user, text) => `touser ${user} ${text}`,
    SendToConnection: (id, text) => `toconn ${id} ${text}`,
    AskClient: (id, question) => `ask ${id} ${question}`,
};

const LINE_CAP = 64 * 1024;

/**
 * The official .NET client (`dotnet-peer chat-client`). Every command is followed by `id`, whose
 * answer (`id X`) comes only once the command before it has completed (the driver runs its
 * commands one at a time), so `call` resolves when the server has answered.
 */
export class DotnetChatClient {
    constructor({ name, user = name, server, protocol = "json", transport = "websockets" }) {
        this.kind = "dotnet";
        this.name = name;
        this.user = user;
        this.server = server;
        this.protocol = protocol;
        this.transport = transport;
        this.label = `${name} (.NET ${protocol} ${transport} on ${server.name})`;
        this.log = new EventLog();
        this.control = [];
        this.waiters = [];
        this.output = "";
        this.queue = Promise.resolve();
        this.exited = false;
    }

    get events() {
        return this.log.events;
    }

    supports(method) {
        return Object.prototype.hasOwnProperty.call(DOTNET_COMMANDS, method);
    }

    async start() {
        const args = ["chat-client", "--url", this.server.hubUrl(`?user=${encodeURIComponent(this.user)}`),
            "--name", this.name, "--transport", this.transport];
        if (this.protocol === "messagepack") {
            args.push("--messagepack");
        }
        this.child = track(spawn(dotnetPeer, args, { stdio: ["pipe", "pipe", "pipe"] }));
        this.exit = new Promise((resolve) => this.child.once("exit", (code, signal) => {
            this.exited = true;
            this.wake();
            resolve({ code, signal });
        }));
        this.child.once("error", (err) => { this.output += `\nspawn error: ${err.message}`; });
        this.child.stdin.on("error", () => { /* the driver went away; its exit is reported */ });
        this.child.stderr.setEncoding("utf8");
        this.child.stderr.on("data", (chunk) => this.keep(chunk));
        this.child.stdout.setEncoding("utf8");
        let pending = "";
        this.child.stdout.on("data", (chunk) => {
            this.keep(chunk);
            pending += chunk;
            if (pending.length > LINE_CAP) {
                this.keep(`\n[a stdout line longer than ${LINE_CAP} characters was cut]\n`);
                pending = pending.slice(-LINE_CAP);
            }
            const lines = pending.split(/\r?\n/);
            pending = lines.pop();
            for (const line of lines) {
                this.line(line);
            }
        });
        const connected = (await this.next((l) => l.startsWith("connected "), START_MS, "connected ID")).pop();
        this.id = connected.slice("connected ".length).trim();
        // The same barrier as the JS client's (see there), with a call that changes nothing:
        // leaving a group it is not in.
        await this.call("LeaveGroup", `none-${this.name}`);
        return this;
    }

    keep(chunk) {
        this.output = (this.output + chunk).slice(-LINE_CAP);
    }

    line(line) {
        const space = line.indexOf(" ");
        const head = space < 0 ? line : line.slice(0, space);
        if (EVENT_TARGETS.includes(head)) {
            // "ReceiveMessage USER TEXT", "GroupMessage G TEXT" (two arguments) or
            // "UserMessage TEXT", "DirectMessage TEXT" (one). The suite's texts have no spaces.
            const rest = space < 0 ? "" : line.slice(space + 1);
            if (head === "ReceiveMessage" || head === "GroupMessage") {
                const cut = rest.indexOf(" ");
                this.log.push(head, cut < 0 ? [rest] : [rest.slice(0, cut), rest.slice(cut + 1)]);
            } else {
                this.log.push(head, [rest]);
            }
            return;
        }
        if (this.control.length < MAX_EVENTS) {
            this.control.push(line);
        }
        this.wake();
    }

    wake() {
        for (const waiter of this.waiters.splice(0)) {
            waiter();
        }
    }

    /** Takes (and returns) the control lines up to and including the first one that `match`es. */
    async next(match, ms, what) {
        const deadline = Date.now() + ms;
        for (;;) {
            const index = this.control.findIndex(match);
            if (index >= 0) {
                return this.control.splice(0, index + 1);
            }
            if (this.exited) {
                throw new Error(`${this.label} exited while waiting for "${what}"; its output:\n${this.output}`);
            }
            const left = deadline - Date.now();
            if (left <= 0) {
                throw new Error(`${this.label}: no "${what}" within ${ms} ms; its output:\n${this.output}`);
            }
            await new Promise((resolve) => {
                const timer = setTimeout(resolve, left);
                this.waiters.push(() => { clearTimeout(timer); resolve(); });
            });
        }
    }

    call(method, ...args) {
        const command = DOTNET_COMMANDS[method];
        if (!command) {
            return Promise.reject(new Error(`the .NET chat-client has no command for ${method}`));
        }
        const result = this.queue.then(() => this.runCommand(method, command(...args)));
        this.queue = result.then(() => undefined, () => undefined);
        return result;
    }

    async runCommand(method, line) {
        // Control lines before this command belong to earlier ones.
        this.control.splice(0);
        this.child.stdin.write(`${line}\nid\n`);
        const lines = await this.next((l) => l.startsWith("id "), CALL_MS, `id (completion of ${method})`);
        const replies = lines.slice(0, -1);
        const error = replies.find((l) => l.startsWith("error "));
        if (error) {
            throw new Error(`${this.label}: ${method} failed: ${error.slice("error ".length)}`);
        }
        const answer = replies.find((l) => l.startsWith("answer "));
        return answer === undefined ? null : answer.slice("answer ".length);
    }

    get connected() {
        return !this.exited;
    }

    async stop() {
        if (!this.child || this.exited) {
            return;
        }
        this.child.stdin.end("quit\n");
        try {
            await withTimeout(this.exit, STOP_MS, `exit of ${this.label}`);
        } catch {
            this.child.kill("SIGKILL");
            await this.exit;
        }
    }
}
