//! The generated JavaScript hub proxies served at `<root>/hubs` (and `<root>/js`) for the
//! classic jQuery client (`jquery.signalR.js` 2.x).
//!
//! A page loads jQuery, then `jquery.signalR.js`, then this script, and uses
//! `$.connection.hub` (the default connection) and one proxy per hub:
//!
//! ```js
//! $.connection.testHub.client.message = function (text) { ... };  // before start()
//! $.connection.hub.start().done(function () {
//!     $.connection.testHub.server.echo("hi").done(function (reply) { ... });
//! });
//! ```
//!
//! What the script does, as the real server's proxies do:
//! * adds `createHubProxies()` to `$.hubConnection.prototype`; it makes one proxy per hub, keyed
//!   by the hub name with its first letter lower-cased (`TestHub` → `testHub`), with an empty
//!   `client` object and a `server` object holding one function per hub method (the method name
//!   with its first letter lower-cased). Each function invokes the method by its registered name
//!   with all the arguments it was given. Hubs and methods come out in ordinal order of their
//!   registered names; several registrations of one method name (overloads by argument count)
//!   make one function without named parameters.
//! * when the connection is starting, subscribes every function the page put on a proxy's
//!   `client` object (so that `connectionData` lists that hub), and unsubscribes them when it
//!   disconnects;
//! * creates the default connection `$.connection.hub` for the service URL with
//!   `useDefaultPath: false`, and puts the proxies on `$.connection`.
//!
//! The text is ours; only the behaviour is the real server's.

use std::cmp::Ordering;
use std::fmt::Write as _;

/// A hub as the proxy script shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyHub {
    /// The hub's registered name (`TestHub`).
    pub(crate) name: String,
    /// Its methods; a name may appear several times (overloads).
    pub(crate) methods: Vec<ProxyMethod>,
}

/// A hub method as the proxy script shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyMethod {
    /// The method's registered name (`Echo`), the name the client invokes.
    pub(crate) name: String,
    /// Its parameter names, shown as the JavaScript function's parameters where they are usable
    /// there (otherwise the function has none; arguments are passed along either way).
    pub(crate) parameters: Vec<String>,
}

/// .NET's ordinal string order: by UTF-16 code units (it differs from Rust's `str` order only
/// for characters above U+FFFF against U+E000–U+FFFF).
fn ordinal(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The name with its first character lower-cased (`TestHub` → `testHub`, `renamed` stays).
fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        // `İ` lower-cases to two characters; .NET's invariant lower-casing of one character
        // gives the first of them, `i`.
        Some(first) => first.to_lowercase().take(1).chain(chars).collect(),
        None => String::new(),
    }
}

/// `s` as a JavaScript string literal: JSON's escapes, plus the line and paragraph separators
/// (not allowed raw in older JavaScript strings) and `<` (so `</script>` cannot appear).
fn js_string(s: &str) -> String {
    // A string always serializes.
    let json = serde_json::to_string(s).expect("strings serialize");
    json.replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .replace('<', "\\u003c")
}

/// Words that cannot name a parameter of a strict-mode function, and the names the generated
/// function bodies use (a parameter with one of those names would hide it).
const NOT_A_PARAMETER: &[&str] = &[
    "arguments",
    "await",
    "break",
    "case",
    "catch",
    "class",
    "const",
    "continue",
    "debugger",
    "default",
    "delete",
    "do",
    "else",
    "enum",
    "eval",
    "export",
    "extends",
    "false",
    "finally",
    "for",
    "function",
    "if",
    "implements",
    "import",
    "in",
    "instanceof",
    "interface",
    "let",
    "new",
    "null",
    "package",
    "private",
    "protected",
    "public",
    "return",
    "static",
    "super",
    "switch",
    "this",
    "throw",
    "true",
    "try",
    "typeof",
    "var",
    "void",
    "while",
    "with",
    "yield",
    // used inside the generated functions
    "proxies",
    "callServer",
];

fn is_parameter_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let starts_well = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'$');
    starts_well
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
        && !NOT_A_PARAMETER.contains(&name)
}

/// The parameter list of one server function: the names when all are usable and distinct,
/// otherwise none.
fn parameter_list(parameters: &[String]) -> String {
    let usable = parameters.iter().all(|p| is_parameter_name(p))
        && parameters
            .iter()
            .enumerate()
            .all(|(i, p)| !parameters[..i].contains(p));
    if usable {
        parameters.join(", ")
    } else {
        String::new()
    }
}

const PREAMBLE: &str = r#"/*!
 * Hub proxies for the classic SignalR JavaScript client (jquery.signalR 2.x).
 * Generated by signalr-server. Load it after jQuery and jquery.signalR, then use
 * $.connection.hub and $.connection.<hub>.server / .client.
 */
(function ($, window, undefined) {
    "use strict";

    if (!$ || typeof $.signalR !== "function" || typeof $.hubConnection !== "function") {
        throw new Error("SignalR: jquery.signalR is not loaded. Load it before the generated hub proxies.");
    }

    var own = Object.prototype.hasOwnProperty,
        toArray = Array.prototype.slice;

    // Invokes server method `method` through `proxy` with every argument in `args`.
    function callServer(proxy, method, args) {
        return proxy.invoke.apply(proxy, [method].concat(toArray.call(args)));
    }

    // Calls visit(proxy, name, handler) for every function the page put on a proxy's `client`.
    function eachClientHandler(proxies, visit) {
        var key, proxy, name;
        for (key in proxies) {
            if (!own.call(proxies, key)) {
                continue;
            }
            proxy = proxies[key];
            if (!proxy || !proxy.hubName || !proxy.client) {
                continue;
            }
            for (name in proxy.client) {
                if (own.call(proxy.client, name) && typeof proxy.client[name] === "function") {
                    visit(proxy, name, proxy.client[name]);
                }
            }
        }
    }

    // The handler as registered with the proxy: runs it with the proxy as `this`. The page's own
    // function is passed to on()/off() as the identity of the registration, so that the same
    // handler is not subscribed twice and can be found again.
    function asRegistered(proxy, handler) {
        return function () {
            return handler.apply(proxy, toArray.call(arguments));
        };
    }

    $.hubConnection.prototype.createHubProxies = function () {
        var connection = this,
            proxies = {},
            proxy;

        // Registered before the first createHubProxy() below on purpose: that call adds the
        // library's own "starting" handler, which lists the hubs that have client handlers in
        // connectionData, and handlers run in the order they were added. So the page's client
        // functions are subscribed just before that list is made.
        connection.starting(function () {
            eachClientHandler(proxies, function (proxy, name, handler) {
                proxy.on(name, asRegistered(proxy, handler), handler);
            });
            connection._registerSubscribedHubs();
        }).disconnected(function () {
            eachClientHandler(proxies, function (proxy, name, handler) {
                proxy.off(name, asRegistered(proxy, handler), handler);
            });
        });
"#;

const POSTAMBLE: &str = r#"
        return proxies;
    };

    $.signalR.hub = $.hubConnection(SERVICE_URL, { useDefaultPath: false });
    $.extend($.signalR, $.signalR.hub.createHubProxies());
}(window.jQuery, window));
"#;

/// The proxy script for `hubs`, with the default connection at `service_url` (the hubs
/// endpoint's path, e.g. `/signalr`).
pub(crate) fn generate(hubs: &[ProxyHub], service_url: &str) -> String {
    let mut hubs: Vec<&ProxyHub> = hubs.iter().collect();
    hubs.sort_by(|a, b| ordinal(&a.name, &b.name));

    let mut out = String::from(PREAMBLE);
    for hub in hubs {
        let key = js_string(&lower_first(&hub.name));
        // The name given to createHubProxy: the library lower-cases it for connectionData and
        // the `H` of invocations.
        let _ = write!(
            out,
            "\n        proxy = proxies[{key}] = connection.createHubProxy({key});\n        \
             proxy.client = {{}};\n        proxy.server = {{}};\n"
        );

        let mut methods: Vec<&ProxyMethod> = hub.methods.iter().collect();
        // Stable: overloads keep their registration order (it does not matter which comes first).
        methods.sort_by(|a, b| ordinal(&a.name, &b.name));
        for group in methods.chunk_by(|a, b| a.name == b.name) {
            let method = group[0];
            let parameters = if group.len() == 1 {
                parameter_list(&method.parameters)
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "        proxy.server[{}] = function ({parameters}) {{\n            \
                 return callServer(proxies[{key}], {}, arguments);\n        }};\n",
                js_string(&lower_first(&method.name)),
                js_string(&method.name),
            );
        }
    }
    out.push_str(&POSTAMBLE.replace("SERVICE_URL", &js_string(service_url)));
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    fn method(name: &str, parameters: &[&str]) -> ProxyMethod {
        ProxyMethod {
            name: name.into(),
            parameters: parameters.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The hubs of the classic TestHub contract (a part of TestHub's methods).
    fn test_hubs() -> Vec<ProxyHub> {
        vec![
            ProxyHub {
                name: "renamed".into(),
                methods: vec![method("Echo", &["s"])],
            },
            ProxyHub {
                name: "TestHub".into(),
                methods: vec![
                    method("WasDisconnected", &["id"]),
                    method("Echo", &["s"]),
                    method("aliasedEcho", &["s"]),
                    method("Overload", &[]),
                    method("Add", &["a", "b"]),
                    method("Overload", &["a"]),
                    method("Overload", &["a", "b"]),
                    method("CountWithProgress", &["n"]),
                    method("SendToGroupExcept", &["g", "excluded", "m"]),
                ],
            },
            ProxyHub {
                name: "SecretHub".into(),
                methods: vec![method("Echo", &["s"])],
            },
        ]
    }

    fn positions(text: &str, needles: &[&str]) -> Vec<usize> {
        needles
            .iter()
            .map(|n| {
                text.find(n)
                    .unwrap_or_else(|| panic!("{n} missing from\n{text}"))
            })
            .collect()
    }

    #[test]
    fn hubs_and_methods_in_ordinal_order_with_lower_first_names() {
        let js = generate(&test_hubs(), "/signalr");
        let hubs = positions(
            &js,
            &[
                r#"proxy = proxies["secretHub"] = connection.createHubProxy("secretHub");"#,
                r#"proxy = proxies["testHub"] = connection.createHubProxy("testHub");"#,
                r#"proxy = proxies["renamed"] = connection.createHubProxy("renamed");"#,
            ],
        );
        assert!(hubs.windows(2).all(|w| w[0] < w[1]), "hub order");

        let test_hub = &js[hubs[1]..hubs[2]];
        let methods = positions(
            test_hub,
            &[
                r#"proxy.server["add"] = function (a, b) {"#,
                r#"proxy.server["countWithProgress"] = function (n) {"#,
                r#"proxy.server["echo"] = function (s) {"#,
                r#"proxy.server["overload"] = function () {"#,
                r#"proxy.server["sendToGroupExcept"] = function (g, excluded, m) {"#,
                r#"proxy.server["wasDisconnected"] = function (id) {"#,
                // Lower-case after upper-case, as the real server orders it.
                r#"proxy.server["aliasedEcho"] = function (s) {"#,
            ],
        );
        assert!(methods.windows(2).all(|w| w[0] < w[1]), "method order");
        // Functions invoke the registered names.
        for invoked in [
            r#"callServer(proxies["testHub"], "Add", arguments)"#,
            r#"callServer(proxies["testHub"], "CountWithProgress", arguments)"#,
            r#"callServer(proxies["testHub"], "aliasedEcho", arguments)"#,
            r#"callServer(proxies["testHub"], "Overload", arguments)"#,
        ] {
            assert!(test_hub.contains(invoked), "{invoked}");
        }
        // One function for the three overloads.
        assert_eq!(test_hub.matches(r#"proxy.server["overload"]"#).count(), 1);
        assert!(js.contains(r#"$.hubConnection("/signalr", { useDefaultPath: false });"#));
    }

    #[test]
    fn names_are_escaped_and_unusable_parameters_dropped() {
        let hubs = [ProxyHub {
            name: "Évil\"</script>\u{2028}".into(),
            methods: vec![
                method("Do\"It", &["a", "b"]),
                method("Kw", &["function"]),
                method("Dup", &["a", "a"]),
                method("Shadow", &["arguments"]),
                method("Helper", &["callServer"]),
                method("Snake", &["user_name", "$x", "_y"]),
                method("Odd", &["a-b"]),
                method("Digit", &["1a"]),
                method("", &[]),
            ],
        }];
        let js = generate(&hubs, "/sig\"nal</r");
        assert!(
            js.contains(r#"proxies["évil\"\u003c/script>\u2028"]"#),
            "{js}"
        );
        assert!(js.contains(r#"proxy.server["do\"It"] = function (a, b) {"#));
        for name in ["kw", "dup", "shadow", "helper", "odd", "digit", ""] {
            let head = format!("proxy.server[\"{name}\"] = function () {{");
            assert!(js.contains(&head), "{head}");
        }
        assert!(js.contains(r#"proxy.server["snake"] = function (user_name, $x, _y) {"#));
        assert!(js.contains(r#"$.hubConnection("/sig\"nal\u003c/r", { useDefaultPath: false })"#));
        assert!(!js.contains("</script>"));
        assert!(!js.contains('\u{2028}'));
    }

    #[test]
    fn lower_first_and_ordinal() {
        assert_eq!(lower_first("TestHub"), "testHub");
        assert_eq!(lower_first("renamed"), "renamed");
        assert_eq!(lower_first("ÉCHO"), "éCHO");
        assert_eq!(lower_first("İx"), "ix");
        assert_eq!(lower_first(""), "");
        assert_eq!(ordinal("WasDisconnected", "aliasedEcho"), Ordering::Less);
        // UTF-16 order puts a supplementary character before U+FFFD; code-point order would not.
        assert_eq!(ordinal("\u{1F600}", "\u{FFFD}"), Ordering::Less);
    }

    #[test]
    fn no_hubs_still_makes_the_default_connection() {
        let js = generate(&[], "/signalr");
        assert!(js.contains("createHubProxies = function"));
        assert!(!js.contains("connection.createHubProxy("));
        assert!(js.contains(r#"$.hubConnection("/signalr", { useDefaultPath: false })"#));
    }

    /// A stand-in for jQuery and jquery.signalR, just large enough to run the generated script:
    /// it records what the script asks of the library. (The real libraries run against it in the
    /// classic interop tests.)
    const FAKE_LIBRARY: &str = r#"
"use strict";
const log = [];
function Proxy(connection, name) {
    this.connection = connection; this.hubName = name.toLowerCase(); this.handlers = {};
}
Proxy.prototype.invoke = function () {
    log.push(["invoke", this.hubName].concat(Array.prototype.slice.call(arguments)));
    return "promise";
};
Proxy.prototype.on = function (name, callback, identity) {
    log.push(["on", this.hubName, name, typeof callback, identity === undefined ? "none" : typeof identity]);
    this.handlers[name.toLowerCase()] = callback;
    return this;
};
Proxy.prototype.off = function (name, callback, identity) {
    log.push(["off", this.hubName, name, typeof identity]);
    delete this.handlers[name.toLowerCase()];
    return this;
};
function Connection(url, options) {
    this.url = url; this.options = options; this.proxies = {};
    this.startingHandlers = []; this.disconnectedHandlers = [];
}
Connection.prototype.starting = function (f) { this.startingHandlers.push(f); return this; };
Connection.prototype.disconnected = function (f) { this.disconnectedHandlers.push(f); return this; };
Connection.prototype.createHubProxy = function (name) {
    log.push(["createHubProxy", name, this.startingHandlers.length]);
    const key = name.toLowerCase();
    if (!this.proxies[key]) { this.proxies[key] = new Proxy(this, name); }
    this._registerSubscribedHubs();
    return this.proxies[key];
};
Connection.prototype._registerSubscribedHubs = function () {
    if (this.registered) { return; }
    this.registered = true;
    const connection = this;
    this.starting(function () {
        const names = [];
        for (const key in connection.proxies) {
            if (Object.keys(connection.proxies[key].handlers).length > 0) { names.push({ name: key }); }
        }
        connection.data = JSON.stringify(names);
    });
};
Connection.prototype.start = function () {
    for (const f of this.startingHandlers.slice()) { f.call(this); }
};
Connection.prototype.stop = function () {
    for (const f of this.disconnectedHandlers.slice()) { f.call(this); }
};
const $ = {
    signalR: function () {},
    hubConnection: function (url, options) { return new Connection(url, options); },
    extend: function (target, source) { Object.assign(target, source); return target; },
};
$.hubConnection.prototype = Connection.prototype;
$.connection = $.signalR;
const window = { jQuery: $ };
"#;

    const FAKE_PAGE: &str = r#"
const hub = $.connection.hub;
log.push(["url", hub.url, JSON.stringify(hub.options)]);
log.push(["keys", Object.keys($.connection).sort().join(",")]);
const testHub = $.connection.testHub;
testHub.client.message = function (text) { log.push(["message", text, this === testHub]); };
testHub.client.notAFunction = 5;
log.push(["echo returns", testHub.server.echo("hi")]);
testHub.server.add(1, 2);
testHub.server.overload();
testHub.server.overload(1, [2], { three: 3 });
testHub.server.aliasedEcho();
$.connection.renamed.server.echo(undefined, null);
hub.start();
log.push(["data", hub.data]);
testHub.handlers["message"]("pushed");
hub.stop();
log.push(["after stop", Object.keys(testHub.handlers).length]);
process.stdout.write(JSON.stringify(log));
"#;

    #[test]
    fn the_script_runs_in_node_against_a_stand_in_library() {
        let js = generate(&test_hubs(), "/signalr");
        let program = format!("{FAKE_LIBRARY}\n{js}\n{FAKE_PAGE}");
        let child = Command::new("node")
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            println!("SKIPPED: `node` is not on PATH; the generated proxy script was not run");
            return;
        };
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(program.as_bytes())
            .expect("write the program");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait for node").is_none() {
            assert!(Instant::now() < deadline, "node ran for over 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("node output");
        assert!(
            output.status.success(),
            "node failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let log: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).expect("the page's log is JSON");
        let expected = serde_json::json!([
            // The script's starting handler comes before the library's (which the first
            // createHubProxy adds), so connectionData sees the subscriptions.
            ["createHubProxy", "secretHub", 1],
            ["createHubProxy", "testHub", 2],
            ["createHubProxy", "renamed", 2],
            ["url", "/signalr", "{\"useDefaultPath\":false}"],
            ["keys", "hub,renamed,secretHub,testHub"],
            ["invoke", "testhub", "Echo", "hi"],
            ["echo returns", "promise"],
            ["invoke", "testhub", "Add", 1, 2],
            ["invoke", "testhub", "Overload"],
            ["invoke", "testhub", "Overload", 1, [2], {"three": 3}],
            ["invoke", "testhub", "aliasedEcho"],
            ["invoke", "renamed", "Echo", null, null],
            ["on", "testhub", "message", "function", "function"],
            ["data", "[{\"name\":\"testhub\"}]"],
            ["message", "pushed", true],
            ["off", "testhub", "message", "function"],
            ["after stop", 0],
        ]);
        assert_eq!(serde_json::Value::Array(log), expected);
    }
}
