// In-page harness for the classic SignalR interop tests: opens jQuery SignalR 2.4.3 connections
// either through the generated proxy (`<script src="/signalr/hubs">`, `$.connection.testHub`) or
// by hand (`$.hubConnection()` + `createHubProxy`), records everything they report, and answers
// the test (driving it through playwright's page.evaluate) with plain JSON.
(function () {
    "use strict";

    var $ = window.jQuery;
    var CALL_TIMEOUT_MS = 15000;
    var START_TIMEOUT_MS = 20000;
    // Client methods of the classic TestHub contract that the tests listen to.
    var TEST_HUB_METHODS = ["message", "manyArgs", "groupMessage", "broadcast", "notify"];
    var MAX_EVENTS = 5000;

    var clients = {};
    var nextKey = 1;
    var generatedInUse = false;

    function camel(name) {
        return name.charAt(0).toLowerCase() + name.slice(1);
    }

    function copy(value) {
        return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
    }

    function describeError(error) {
        if (!error) return { message: String(error) };
        return {
            message: String(error.message !== undefined ? error.message : error),
            source: error.source === undefined ? undefined : String(error.source),
            data: copy(error.data),
        };
    }

    function record(client, entry) {
        if (client.events.length >= MAX_EVENTS) return;
        entry.at = Date.now();
        client.events.push(entry);
    }

    function listener(client, hub, method) {
        return function () {
            record(client, { type: "client", hub: hub, method: method, args: copy($.makeArray(arguments)) });
        };
    }

    function wire(client) {
        var connection = client.connection;
        connection.stateChanged(function (change) {
            record(client, { type: "state", oldState: change.oldState, newState: change.newState });
        });
        connection.reconnecting(function () {
            record(client, { type: "reconnecting" });
        });
        connection.reconnected(function () {
            record(client, {
                type: "reconnected",
                id: connection.id,
                transport: connection.transport && connection.transport.name,
            });
        });
        connection.connectionSlow(function () {
            record(client, { type: "connectionSlow" });
        });
        connection.disconnected(function () {
            record(client, { type: "disconnected" });
        });
        // Every message the transport delivers; progress reports are kept here as they arrive,
        // since jQuery drops those that come after their call's result.
        connection.received(function (message) {
            if (message && message.P) {
                record(client, { type: "progress", callId: String(message.P.I), value: copy(message.P.D) });
            }
        });
        connection.error(function (error) {
            record(client, { type: "error", error: describeError(error) });
        });
    }

    function withTimeout(promise, ms, what) {
        return new Promise(function (resolve, reject) {
            var timer = setTimeout(function () {
                reject(new Error(what + " timed out after " + ms + " ms"));
            }, ms);
            promise.then(function (value) {
                clearTimeout(timer);
                resolve(value);
            }, function (error) {
                clearTimeout(timer);
                reject(error);
            });
        });
    }

    function info(client) {
        var connection = client.connection;
        return {
            key: client.key,
            mode: client.mode,
            id: connection.id,
            state: connection.state,
            transport: connection.transport ? connection.transport.name : null,
        };
    }

    window.harness = {
        /**
         * Opens a connection to testHub and renamed and starts it on one transport.
         * mode "generated": the server's generated proxy (one per page); "manual": $.hubConnection().
         */
        open: function (options) {
            var mode = options.mode;
            var client = { key: String(nextKey++), mode: mode, events: [] };
            var connection;
            var proxies;
            if (mode === "generated") {
                if (generatedInUse) return Promise.reject(new Error("the generated proxy's connection is in use"));
                if (!$.connection || !$.connection.testHub) {
                    return Promise.reject(new Error("the generated proxy did not define $.connection.testHub"));
                }
                generatedInUse = true;
                connection = $.connection.hub;
                proxies = { testHub: $.connection.testHub, renamed: $.connection.renamed };
                TEST_HUB_METHODS.forEach(function (method) {
                    proxies.testHub.client[method] = listener(client, "testHub", method);
                });
                // A client function is what puts a hub into connectionData.
                proxies.renamed.client.renamedNotice = listener(client, "renamed", "renamedNotice");
            } else {
                connection = $.hubConnection();
                proxies = {
                    testHub: connection.createHubProxy("testHub"),
                    renamed: connection.createHubProxy("renamed"),
                };
                TEST_HUB_METHODS.forEach(function (method) {
                    proxies.testHub.on(method, listener(client, "testHub", method));
                });
                proxies.renamed.on("renamedNotice", listener(client, "renamed", "renamedNotice"));
            }
            client.connection = connection;
            client.proxies = proxies;
            clients[client.key] = client;
            wire(client);
            var started = new Promise(function (resolve, reject) {
                connection.start({ transport: options.transport }).done(function () {
                    resolve(info(client));
                }).fail(function (error) {
                    reject(new Error("start failed: " + describeError(error).message));
                });
            });
            return withTimeout(started, START_TIMEOUT_MS, "start");
        },

        /**
         * Invokes a hub method; through the generated proxy as `server.<camelName>(...)`, by hand
         * as `invoke(Name, ...)`. Never rejects: resolves to { ok, result | error, progress, state }.
         */
        call: function (key, hub, method, args) {
            var client = clients[key];
            var proxy = client.proxies[hub];
            var progress = [];
            // The I jQuery gives this invocation (a per-connection counter).
            var callId = String(client.connection._.invocationCallbackId);
            var deferred;
            try {
                if (client.mode === "generated") {
                    var fn = proxy.server[camel(method)];
                    if (typeof fn !== "function") {
                        return Promise.resolve({
                            ok: false,
                            error: { message: "the generated proxy has no " + hub + ".server." + camel(method) },
                            progress: progress,
                        });
                    }
                    deferred = fn.apply(proxy.server, args || []);
                } else {
                    deferred = proxy.invoke.apply(proxy, [method].concat(args || []));
                }
            } catch (error) {
                return Promise.resolve({ ok: false, error: describeError(error), progress: progress });
            }
            var outcome = new Promise(function (resolve) {
                deferred.progress(function (value) {
                    progress.push(copy(value));
                }).done(function (result) {
                    resolve({
                        ok: true,
                        callId: callId,
                        hasResult: result !== undefined,
                        result: copy(result),
                        progress: progress,
                        state: copy(proxy.state),
                    });
                }).fail(function (error) {
                    resolve({
                        ok: false,
                        callId: callId,
                        error: describeError(error),
                        progress: progress,
                        state: copy(proxy.state),
                    });
                });
            });
            return withTimeout(outcome, CALL_TIMEOUT_MS, hub + "." + method).catch(function (error) {
                return { ok: false, error: describeError(error), progress: progress, timedOut: true };
            });
        },

        /** Merges `values` into the hub proxy's caller state (sent with every later call). */
        setState: function (key, hub, values) {
            $.extend(clients[key].proxies[hub].state, values);
            return copy(clients[key].proxies[hub].state);
        },

        state: function (key, hub) {
            return copy(clients[key].proxies[hub].state);
        },

        events: function (key) {
            return copy(clients[key].events);
        },

        info: function (key) {
            return info(clients[key]);
        },

        /** Stops the connection (jQuery closes the transport and sends /abort). */
        stop: function (key) {
            var client = clients[key];
            client.connection.stop();
            return info(client);
        },
    };
}());
