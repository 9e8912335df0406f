// Helpers around the official @microsoft/signalr client used by the interop tests.

import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

export { signalR, MessagePackHubProtocol };

/**
 * Client log level: $SIGNALR_LOG_LEVEL (e.g. "Debug", "Trace", "Warning"), default None.
 * Keep it at Warning or quieter in normal runs.
 */
export const clientLogLevel = (() => {
    const name = process.env.SIGNALR_LOG_LEVEL;
    if (name && Object.prototype.hasOwnProperty.call(signalR.LogLevel, name)) {
        return signalR.LogLevel[name];
    }
    return signalR.LogLevel.None;
})();

/** Rejects with a descriptive error if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not complete within ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `predicate` every 10 ms until it is truthy or `ms` elapse. */
export async function waitFor(predicate, ms, what) {
    const deadline = Date.now() + ms;
    while (!predicate()) {
        if (Date.now() > deadline) {
            throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
    }
}

const closedPromises = new WeakMap();

/**
 * Builds (does not start) a HubConnection.
 * @param {string} url full hub URL, e.g. http://127.0.0.1:1234/chat
 * @param {{ transport?: signalR.HttpTransportType, skipNegotiation?: boolean,
 *   protocol?: "json" | "messagepack", httpClient?: signalR.HttpClient,
 *   headers?: Record<string, string>, accessTokenFactory?: () => string | Promise<string> }} [options]
 */
export function buildConnection(url, {
    transport, skipNegotiation = false, protocol = "json", httpClient, headers, accessTokenFactory,
} = {}) {
    const httpOptions = { skipNegotiation };
    if (transport !== undefined) {
        httpOptions.transport = transport;
    }
    if (httpClient) {
        httpOptions.httpClient = httpClient;
    }
    if (headers) {
        httpOptions.headers = headers;
    }
    if (accessTokenFactory) {
        httpOptions.accessTokenFactory = accessTokenFactory;
    }
    const connection = new signalR.HubConnectionBuilder()
        .withUrl(url, httpOptions)
        .withHubProtocol(protocol === "messagepack" ? new MessagePackHubProtocol() : new signalR.JsonHubProtocol())
        .configureLogging(clientLogLevel)
        .build();
    // Register an onclose observer right away so no close event can be missed.
    closedPromises.set(connection, new Promise((resolve) => connection.onclose((error) => resolve(error))));
    return connection;
}

/** Resolves with the argument of the first `onclose` callback of a connection made by buildConnection. */
export function closed(connection) {
    const promise = closedPromises.get(connection);
    if (!promise) {
        throw new Error("connection was not created by buildConnection()");
    }
    return promise;
}

/** Stops a connection, ignoring errors; used for cleanup. */
export async function stopQuietly(connection) {
    if (connection.state === signalR.HubConnectionState.Disconnected) {
        return;
    }
    try {
        await withTimeout(connection.stop(), 5_000, "cleanup stop()");
    } catch {
        // cleanup only
    }
}

/**
 * An HttpClient that records method, URL and response status of every request it sends.
 *
 * Long-poll GETs (the only GET requests that carry an abort signal) are detached from the
 * client's abort: when the client aborts the poll on stop(), the promise handed back to the
 * client rejects with AbortError exactly as usual, but the HTTP request itself stays open on
 * the wire so the test can observe how the server ends it (204 after the DELETE).
 */
export class RecordingHttpClient extends signalR.DefaultHttpClient {
    constructor() {
        super(signalR.NullLogger.instance);
        /** @type {{ seq: number, method: string, url: string, statusCode?: number, error?: unknown,
         *   ended: boolean, abortedByClient: boolean, endSeq?: number }[]} */
        this.requests = [];
        this._seq = 0;
        this._inFlight = new Set();
        this._all = new Set();
    }

    /** Sequence number of the most recent event (request start or end). */
    get seq() {
        return this._seq;
    }

    send(request) {
        const entry = {
            seq: ++this._seq,
            method: request.method,
            url: request.url,
            statusCode: undefined,
            error: undefined,
            ended: false,
            abortedByClient: false,
            endSeq: undefined,
        };
        this.requests.push(entry);
        const recorded = (promise) => promise.then(
            (response) => {
                entry.statusCode = response.statusCode;
                entry.ended = true;
                entry.endSeq = ++this._seq;
                this._all.delete(entry);
                return response;
            },
            (error) => {
                entry.statusCode = error && error.statusCode;
                entry.error = error;
                entry.ended = true;
                entry.endSeq = ++this._seq;
                this._all.delete(entry);
                throw error;
            });

        this._all.add(entry);

        if (request.method === "GET" && request.abortSignal) {
            const signal = request.abortSignal;
            if (signal.aborted) {
                entry.ended = true;
                entry.abortedByClient = true;
                this._all.delete(entry);
                return Promise.reject(new signalR.AbortError());
            }
            const onWire = recorded(super.send({ ...request, abortSignal: undefined }));
            const settled = onWire.then(() => undefined, () => undefined);
            this._inFlight.add(settled);
            settled.then(() => this._inFlight.delete(settled));
            return new Promise((resolve, reject) => {
                signal.onabort = () => {
                    entry.abortedByClient = true;
                    reject(new signalR.AbortError());
                };
                onWire.then(resolve, reject);
            });
        }
        return recorded(super.send(request));
    }

    /**
     * Waits until every detached long-poll request has completed on the wire (rejects after `ms`),
     * then gives other outstanding requests up to 1 s more so the summary is complete.
     */
    async drain(ms) {
        await withTimeout(Promise.all([...this._inFlight]), ms, "outstanding long-poll requests");
        try {
            await waitFor(() => this._all.size === 0, 1_000, "outstanding HTTP requests");
        } catch {
            // Only for the summary; the summary shows them as pending.
        }
    }

    /** A printable summary of the recorded requests. */
    summary() {
        return this.requests.map((r) => `#${r.seq} ${r.method} ${r.url} -> ` +
            `${r.statusCode ?? (r.error ? `error ${r.error}` : "pending")}` +
            `${r.abortedByClient ? " (aborted by client)" : ""}${r.endSeq ? ` [ended #${r.endSeq}]` : ""}`).join("\n");
    }
}
