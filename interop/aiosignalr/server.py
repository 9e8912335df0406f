"""A chat hub on aiosignalr's server (PyPI), for interop tests of our Rust client.

Hub methods: Echo(value) returns value; SendMessage(user, text) calls ReceiveMessage(user, text)
on every client; Count(n) streams 1..n; Fail(text) raises an exception.
Prints "Listening on http://HOST:PORT" once it accepts connections, then serves until killed.
"""

import argparse
import asyncio
import logging

from aiosignalr.server import Hub, SignalRServer


class ChatHub(Hub):
    async def Echo(self, value) -> object:
        return value

    async def SendMessage(self, user: str, text: str) -> None:
        await self.clients.all_.send("ReceiveMessage", user, text)

    async def Count(self, n: int):
        for i in range(1, n + 1):
            yield i

    async def Fail(self, text: str) -> None:
        raise RuntimeError(text)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bind", default="127.0.0.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    server = SignalRServer(ChatHub)
    host, port = await server.serve(args.bind, args.port, path="/chat")
    print(f"Listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
