"""The peer under test: aiosignalr's server (PyPI) with the benchmark hub on /hub.

Hub methods, as in bench-server: Echo(payload) returns payload; Broadcast(payload) calls
Receive(payload) on every other connection; GroupBroadcast(group, payload) calls Receive(payload)
on the other members of group; JoinGroup(name) adds the caller to group name.

Prints "Listening on http://HOST:PORT" once it accepts connections, then serves until killed.
The runner (cargo run -p signalr-bench) installs aiosignalr into bench/.venv and starts this.
"""

import argparse
import asyncio
import logging

from aiosignalr.server import Hub, SignalRServer


class BenchHub(Hub):
    async def Echo(self, payload: str) -> str:
        return payload

    async def Broadcast(self, payload: str) -> None:
        await self.clients.others.send("Receive", payload)

    async def GroupBroadcast(self, group: str, payload: str) -> None:
        await self.clients.others_in_group(group).send("Receive", payload)

    async def JoinGroup(self, name: str) -> None:
        await self.groups.add(name)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = SignalRServer(BenchHub)
    host, port = await server.serve(args.bind, args.port, path="/hub")
    print(f"Listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
