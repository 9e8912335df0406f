#!/usr/bin/env node
// Runs a generated classic hub proxy script (/signalr/hubs) against a stand-in for jQuery and
// jquery.signalR, and prints what the script did as JSON, so that two servers' scripts can be compared by
// their behaviour rather than by their text. Node 20, no packages.
//
//     node proxy_probe.mjs < hubs.js
//
// The stand-in is only as large as a proxy script needs: `$.signalR` (also `$.connection`),
// `$.hubConnection` whose connections have starting()/disconnected()/createHubProxy(), hub proxies with
// invoke()/on()/off(), and the jQuery helpers such scripts use (extend, merge, makeArray, isFunction, each,
// ...). It records every call. The script and the probing run in a separate V8 context with a time limit,
// so that a script that loops or throws cannot hang or crash the probe.
//
// What is probed (each part is reported even when another part failed):
// - load: whether the script runs, and whether it refuses to run when jquery.signalR is not loaded;
// - the default connection: the arguments of every $.hubConnection() call, and whether $.connection.hub is
//   the connection it made;
// - the proxies: the createHubProxy() calls in order, the keys on $.connection and the proxy under each;
// - per hub, each function of proxy.server: its declared parameter count, and what it passes to
//   proxy.invoke() when called with 0, that many and two more distinct arguments (objects and arrays), with
//   (undefined, null), and detached from its object; whether it returns what invoke() returned;
// - the client side: functions put on proxy.client before start are subscribed with proxy.on() when the
//   connection's starting callbacks run (in the order they were added, as the library runs them), the
//   connectionData the library would then send, that a subscribed callback runs the page's function with
//   the proxy as `this`, and that the disconnected callbacks unsubscribe them with proxy.off();
// - createHubProxies() called on a second connection: the same hubs, on that connection's own proxies.

import fs from "node:fs";
import vm from "node:vm";

// Each run of code in the probe's context (the stand-in, the script, the probing) stops after this long.
const LIMIT_MS = 5000;
// The report printed is at most this long (a script with absurdly many hubs gets a short failure instead).
const MAX_REPORT = 4 * 1024 * 1024;

// Runs in the probe's context: the stand-in library. Everything it records is kept in `__probe`.
function standIn(withSignalR) {
    "use strict";
    var own = Object.prototype.hasOwnProperty;
    var slice = Array.prototype.slice;
    var probe = { connections: [], hubConnectionCalls: [], created: [], invokes: [], ons: [], offs: [] };
    globalThis.__probe = probe;

    function HubProxy(connection, hubName) {
        this.connection = connection;
        this.hubName = hubName;
        this._subscriptions = []; // {event, identity}
    }
    HubProxy.prototype.invoke = function () {
        var result = { invokeResult: probe.invokes.length };
        probe.invokes.push({ self: this, args: slice.call(arguments), result: result });
        return result;
    };
    HubProxy.prototype.on = function (event, callback, identity) {
        probe.ons.push({ proxy: this, event: event, callback: callback, identity: identity, n: arguments.length });
        var key = String(event).toLowerCase(), id = identity === undefined ? callback : identity;
        var known = this._subscriptions.some(function (s) { return s.event === key && s.identity === id; });
        if (!known) {
            this._subscriptions.push({ event: key, identity: id });
        }
        return this;
    };
    HubProxy.prototype.off = function (event, callback, identity) {
        probe.offs.push({ proxy: this, event: event, callback: callback, identity: identity, n: arguments.length });
        var key = String(event).toLowerCase(), id = identity === undefined ? callback : identity;
        this._subscriptions = this._subscriptions.filter(function (s) {
            return !(s.event === key && (id === undefined || s.identity === id));
        });
        return this;
    };

    function hubConnection(url, options) {
        var c = Object.create(hubConnection.prototype);
        c.url = url;
        c.options = options;
        c.proxies = {};
        c._starting = [];
        c._disconnected = [];
        c._subscribedHubsRegistered = false;
        var shown;
        try {
            shown = options === undefined ? "(none)" : JSON.parse(JSON.stringify(options));
        } catch (e) {
            shown = "options that are not JSON";
        }
        probe.hubConnectionCalls.push({ url: url, options: shown });
        probe.connections.push(c);
        return c;
    }
    hubConnection.prototype.starting = function (f) { this._starting.push(f); return this; };
    hubConnection.prototype.disconnected = function (f) { this._disconnected.push(f); return this; };
    hubConnection.prototype.createHubProxy = function (name) {
        var key = String(name).toLowerCase();
        if (!own.call(this.proxies, key)) {
            this.proxies[key] = new HubProxy(this, key);
        }
        probe.created.push({ name: name, connection: this, proxy: this.proxies[key] });
        this._registerSubscribedHubs();
        return this.proxies[key];
    };
    // As the library does: once per connection, a starting callback that lists the hubs with at least one
    // subscription as the connection's data (connectionData on the wire).
    hubConnection.prototype._registerSubscribedHubs = function () {
        if (this._subscribedHubsRegistered) {
            return;
        }
        this._subscribedHubsRegistered = true;
        var connection = this;
        this.starting(function () {
            var hubs = [];
            for (var key in connection.proxies) {
                if (own.call(connection.proxies, key) && connection.proxies[key]._subscriptions.length > 0) {
                    hubs.push({ name: key });
                }
            }
            connection.data = JSON.stringify(hubs);
        });
    };

    function $() {
        throw new Error("the stand-in jQuery has no $(...)");
    }
    $.isFunction = function (f) { return typeof f === "function"; };
    $.isArray = Array.isArray;
    $.noop = function () {};
    $.type = function (o) { return o === null ? "null" : Array.isArray(o) ? "array" : typeof o; };
    $.isEmptyObject = function (o) { for (var k in o) { return false; } return true; };
    $.isPlainObject = function (o) { return !!o && Object.prototype.toString.call(o) === "[object Object]"; };
    $.trim = function (s) { return s == null ? "" : String(s).trim(); };
    $.inArray = function (x, a) { return a == null ? -1 : Array.prototype.indexOf.call(a, x); };
    $.merge = function (first, second) {
        var n = first.length >>> 0;
        for (var i = 0; i < (second.length >>> 0); i++) {
            first[n++] = second[i];
        }
        first.length = n;
        return first;
    };
    $.makeArray = function (a) {
        if (a == null) {
            return [];
        }
        var arrayLike = typeof a === "object" && typeof a.length === "number";
        return arrayLike ? $.merge([], a) : [a];
    };
    $.each = function (o, f) {
        if (Array.isArray(o) || (o && typeof o === "object" && typeof o.length === "number")) {
            for (var i = 0; i < o.length; i++) {
                if (f.call(o[i], i, o[i]) === false) { break; }
            }
        } else {
            for (var k in o) {
                if (own.call(o, k) && f.call(o[k], k, o[k]) === false) { break; }
            }
        }
        return o;
    };
    $.map = function (o, f) {
        var out = [];
        $.each(o, function (k, v) { var r = f(v, k); if (r != null) { out.push(r); } });
        return out;
    };
    $.extend = function () {
        var args = slice.call(arguments), deep = false;
        if (typeof args[0] === "boolean") {
            deep = args.shift();
        }
        var target = args.shift();
        if (args.length === 0) {
            args = [target];
            target = $;
        }
        if (target == null || (typeof target !== "object" && typeof target !== "function")) {
            target = {};
        }
        args.forEach(function (source) {
            if (source == null) { return; }
            for (var k in source) {
                var v = source[k];
                if (v === target) { continue; }
                if (deep && $.isPlainObject(v)) {
                    target[k] = $.extend(true, $.isPlainObject(target[k]) ? target[k] : {}, v);
                } else if (v !== undefined) {
                    target[k] = v;
                }
            }
        });
        return target;
    };
    $.hubConnection = hubConnection;
    if (withSignalR) {
        $.signalR = function signalR(url) { return hubConnection(url); };
        $.connection = $.signalR;
    } else {
        delete $.hubConnection;
    }
    globalThis.window = globalThis;
    globalThis.jQuery = $;
}

// Runs in the probe's context after the script: exercises what it set up, returns the report as JSON.
function exercise() {
    "use strict";
    var probe = globalThis.__probe, $ = globalThis.jQuery;
    var own = Object.prototype.hasOwnProperty;
    var slice = Array.prototype.slice;
    var report = {};

    function attempt(name, f) {
        try {
            report[name] = f();
        } catch (e) {
            report[name] = "the probe threw " + (e && e.name) + ": " + (e && e.message);
        }
    }
    // n distinct arguments, told apart by identity: objects and arrays by turns (an array argument must
    // reach invoke() as one argument, not spread into several)
    function markers(n) {
        var out = [];
        for (var i = 0; i < n; i++) { out.push(i % 2 ? ["marker", i] : { marker: i }); }
        return out;
    }
    function describe(v, given) {
        var i = given ? given.indexOf(v) : -1;
        if (i >= 0 && typeof v === "object" && v !== null) { return "#" + i; }
        if (v === undefined) { return "undefined"; }
        if (v === globalThis) { return "the global object"; }
        if (typeof v === "function") { return "a function"; }
        try { return JSON.stringify(v); } catch (e) { return typeof v; }
    }
    function connectionIndex(c) {
        var i = probe.connections.indexOf(c);
        return i < 0 ? "not a connection of $.hubConnection" : i;
    }

    var hub = $.connection && $.connection.hub;
    attempt("hubConnection calls", function () {
        return probe.hubConnectionCalls.map(function (c) { return [c.url, c.options]; });
    });
    attempt("hub is the default connection", function () {
        return hub === undefined ? "no $.connection.hub" : connectionIndex(hub);
    });
    attempt("createHubProxy calls", function () {
        return probe.created.map(function (c) { return [c.name, connectionIndex(c.connection)]; });
    });

    // key -> proxy, from what createHubProxies() put on $.connection
    var keys = Object.keys($.connection || {}).filter(function (k) { return k !== "hub"; }).sort();
    var proxies = {};
    attempt("connection keys", function () {
        var out = {};
        keys.forEach(function (k) {
            var v = $.connection[k], made = probe.created.filter(function (c) { return c.proxy === v; });
            if (made.length) {
                proxies[k] = v;
                out[k] = made[0].name;
            } else {
                out[k] = "not a proxy from createHubProxy: " + describe(v);
            }
        });
        return out;
    });
    var hubKeys = Object.keys(proxies).sort();

    function serverFunctions(proxy, expectedThis) {
        var server = proxy.server, out = {};
        if (!server || typeof server !== "object") {
            return "server is " + describe(server);
        }
        Object.keys(server).sort().forEach(function (name) {
            var f = server[name];
            if (typeof f !== "function") {
                out[name] = { kind: describe(f) };
                return;
            }
            var n = f.length, invoked = [], problems = [];
            var calls = [
                ["no arguments", [], false],
                [n + " arguments", markers(n), false],
                [(n + 2) + " arguments", markers(n + 2), false],
                ["(undefined, null)", [undefined, null], false],
                ["detached, " + n + " arguments", markers(n), true],
            ];
            calls.forEach(function (call) {
                var label = call[0], args = call[1], detached = call[2], result;
                probe.invokes = [];
                try {
                    result = detached ? f.apply(undefined, args) : f.apply(server, args);
                } catch (e) {
                    problems.push(label + ": threw " + (e && e.name));
                    return;
                }
                if (probe.invokes.length !== 1) {
                    problems.push(label + ": invoke() called " + probe.invokes.length + " times");
                    return;
                }
                var inv = probe.invokes[0];
                if (inv.self !== expectedThis) {
                    problems.push(label + ": invoke() on another object than the hub's proxy");
                }
                if (invoked.indexOf(inv.args[0]) < 0) {
                    invoked.push(inv.args[0]);
                }
                var passed = inv.args.slice(1);
                var same = passed.length === args.length && passed.every(function (v, i) { return v === args[i]; });
                if (!same) {
                    var seen = passed.map(function (v) { return describe(v, args); });
                    problems.push(label + ": passed (" + seen.join(", ") + ")");
                }
                if (result !== inv.result) {
                    problems.push(label + ": returned " + describe(result) + ", not invoke()'s result");
                }
            });
            out[name] = {
                invoked: invoked.length === 1 ? invoked[0] : invoked,
                parameters: n,
                arguments: problems.length ? problems : "passed through",
            };
        });
        return out;
    }

    hubKeys.forEach(function (k) {
        var p = proxies[k];
        attempt(k + ".client", function () {
            var c = p.client;
            return c && typeof c === "object" ? "an object with keys [" + Object.keys(c).sort().join(", ") + "]"
                : describe(c);
        });
        attempt(k + ".server", function () { return serverFunctions(p, p); });
    });

    // The client side: handlers on every other hub (in key order), then the connection's lifecycle.
    var handled = [];
    var withHandlers = hubKeys.filter(function (k, i) { return i % 2 === 0; });
    var pageHandlers = [];
    attempt("page sets client handlers", function () {
        withHandlers.forEach(function (k) {
            var p = proxies[k];
            ["alpha", "BetaGamma"].forEach(function (name) {
                var h = function () { handled.push({ handler: h, self: this, args: slice.call(arguments) }); };
                pageHandlers.push({ key: k, name: name, handler: h });
                p.client[name] = h;
            });
            p.client.notAFunction = 5;
        });
        return withHandlers;
    });
    function proxyKey(p) {
        var ks = hubKeys.filter(function (k) { return proxies[k] === p; });
        return ks.length ? ks[0] : "another object";
    }
    function subscriptionsSeen(list) {
        return list.map(function (s) {
            var page = pageHandlers.filter(function (h) { return h.handler === s.identity; });
            var identity = page.length ? "the page's " + page[0].key + ".client." + page[0].name
                : s.n < 3 ? "no identity" : describe(s.identity);
            return [proxyKey(s.proxy), s.event, typeof s.callback, identity];
        }).sort(function (a, b) { return JSON.stringify(a) < JSON.stringify(b) ? -1 : 1; });
    }
    function runAll(list) {
        list.slice().forEach(function (f) { f.call(hub); });
    }
    var onsAtStart = [];
    attempt("starting", function () {
        probe.ons = [];
        runAll(hub._starting);
        onsAtStart = probe.ons.slice();
        return {
            "on() calls": subscriptionsSeen(onsAtStart),
            "connectionData": hub.data === undefined ? "not set" : JSON.parse(hub.data),
        };
    });
    attempt("a subscribed callback runs", function () {
        return onsAtStart.map(function (s) {
            handled = [];
            var a = { pushed: 1 }, b = { pushed: 2 };
            s.callback(a, b);
            if (handled.length !== 1) {
                return proxyKey(s.proxy) + "." + s.event + ": " + handled.length + " page handlers ran";
            }
            var h = handled[0], page = pageHandlers.filter(function (x) { return x.handler === h.handler; })[0];
            return [proxyKey(s.proxy) + "." + s.event, page.key + ".client." + page.name,
                h.self === proxies[page.key] ? "this is the proxy" : "this is " + describe(h.self),
                "(" + h.args.map(function (v) { return describe(v, [a, b]); }).join(", ") + ")"];
        }).sort(function (x, y) { return JSON.stringify(x) < JSON.stringify(y) ? -1 : 1; });
    });
    attempt("disconnected", function () {
        probe.offs = [];
        runAll(hub._disconnected);
        var left = hubKeys.filter(function (k) { return proxies[k]._subscriptions.length > 0; });
        return { "off() calls": subscriptionsSeen(probe.offs), "hubs still subscribed": left };
    });
    attempt("starting again", function () {
        probe.ons = [];
        runAll(hub._starting);
        return {
            "on() calls": subscriptionsSeen(probe.ons),
            "connectionData": hub.data === undefined ? "not set" : JSON.parse(hub.data),
        };
    });

    // createHubProxies() on a connection of the page's own.
    attempt("second connection", function () {
        var before = hubKeys.map(function (k) { return $.connection[k]; });
        var c2 = $.hubConnection("/elsewhere", { useDefaultPath: false });
        var from = probe.created.length;
        var p2 = c2.createHubProxies();
        var out = { "createHubProxy calls": probe.created.slice(from).map(function (c) {
            return [c.name, c.connection === c2 ? "this connection" : connectionIndex(c.connection)];
        }) };
        out.hubs = {};
        Object.keys(p2 || {}).sort().forEach(function (k) {
            var p = p2[k];
            out.hubs[k] = {
                "proxy of this connection": !!p && p.connection === c2,
                "server": p && typeof p === "object" ? serverFunctions(p, p) : describe(p),
            };
        });
        out["$.connection unchanged"] = hubKeys.every(function (k, i) { return $.connection[k] === before[i]; });
        return out;
    });
    return JSON.stringify(report);
}

// What was thrown, for the report: the error's name (an Error's constructor name), and its message cut short.
function thrown(e, withMessage) {
    const isError = e !== null && typeof e === "object" && typeof e.name === "string";
    const name = isError ? e.name : "a " + typeof e + " (not an Error)";
    const message = isError ? String(e.message) : String(e);
    return withMessage ? name + ": " + message.slice(0, 300) : name;
}

function main() {
    const script = fs.readFileSync(0, "utf8");
    const out = {};

    // With the library loaded: run the script, then probe it.
    const ctx = vm.createContext({});
    vm.runInContext("(" + standIn.toString() + ")(true);", ctx, { timeout: LIMIT_MS });
    let loaded = true;
    try {
        vm.runInContext(script, ctx, { timeout: LIMIT_MS, filename: "hubs.js" });
        out.load = "ran";
    } catch (e) {
        loaded = false;
        out.load = "threw " + thrown(e, true);
    }
    if (loaded) {
        try {
            const report = vm.runInContext("(" + exercise.toString() + ")()", ctx, { timeout: LIMIT_MS });
            Object.assign(out, JSON.parse(report));
        } catch (e) {
            out.probe = "the probe failed: " + thrown(e, true);
        }
    }

    // Without jquery.signalR (only jQuery): the script should refuse to run.
    const bare = vm.createContext({});
    vm.runInContext("(" + standIn.toString() + ")(false);", bare, { timeout: LIMIT_MS });
    try {
        vm.runInContext(script, bare, { timeout: LIMIT_MS, filename: "hubs.js" });
        out["without jquery.signalR"] = "ran";
    } catch (e) {
        out["without jquery.signalR"] = "threw " + thrown(e, false);
    }
    let text = JSON.stringify(out);
    if (text.length > MAX_REPORT) {
        text = JSON.stringify({ probe: "the report was over " + MAX_REPORT + " characters" });
    }
    process.stdout.write(text);
}

main();
