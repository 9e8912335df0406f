// Starts one of the server crate's examples (crates/signalr-server/examples) for the interop
// tests: the binary of that name in $EXAMPLES_DIR, or in ../target/debug/examples
// (`cargo build -p signalr-server --examples`), with PORT=0 and the given arguments; it must
// print `Listening on http(s)://<host>:<port>`.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const interopDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The folder of the built examples. */
export const examplesDir = process.env.EXAMPLES_DIR
    ? path.resolve(interopDir, process.env.EXAMPLES_DIR)
    : path.resolve(interopDir, "..", "target", "debug", "examples");

/**
 * Starts example `name` with `args`; resolves to `{ url, output, stop }` once it listens.
 * `output()` is what it printed so far; `stop()` ends it with SIGTERM.
 */
export async function startExample(name, args = []) {
    const bin = path.join(examplesDir, name);
    if (!existsSync(bin)) {
        throw new Error(`example ${name} not found at ${bin} ` +
            "(build it with `cargo build -p signalr-server --examples` or set EXAMPLES_DIR)");
    }
    const child = spawn(bin, args, { env: { ...process.env, PORT: "0" }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => { out += chunk; });
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const url = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`example ${name} did not start:\n${out}`)), 20_000);
        child.stdout.on("data", (chunk) => {
            out += chunk;
            const match = /Listening on (https?:\/\/\S+)/.exec(out);
            if (match) { clearTimeout(timer); resolve(match[1]); }
        });
        exited.then((code) => { clearTimeout(timer); reject(new Error(`example ${name} exited (${code}):\n${out}`)); });
    });
    const stop = async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
        await exited;
    };
    return { url, output: () => out, stop };
}
