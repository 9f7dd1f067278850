"""A TCP proxy that delays every chunk by DELAY_MS in each direction, keeping order.

    python3 delay_proxy.py DELAY_MS LISTEN_PORT:TARGET_HOST:TARGET_PORT [...]

Listens on 127.0.0.1. Used by tests/partition.rs to add latency between two test hosts where
the kernel has no netem.
"""

import asyncio
import sys
import time

DELAY = float(sys.argv[1]) / 1000.0


async def pipe(reader, writer):
    queue = asyncio.Queue()

    async def read():
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + DELAY, data))
            if not data:
                return

    async def write():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    await asyncio.gather(read(), write(), return_exceptions=True)


async def handle(local_reader, local_writer, host, port):
    try:
        remote_reader, remote_writer = await asyncio.open_connection(host, port)
    except OSError:
        local_writer.close()
        return
    await asyncio.gather(pipe(local_reader, remote_writer), pipe(remote_reader, local_writer), return_exceptions=True)


async def main():
    for spec in sys.argv[2:]:
        listen, host, target = spec.split(":")
        await asyncio.start_server(lambda r, w, h=host, p=int(target): handle(r, w, h, p), "127.0.0.1", int(listen))
    print("PROXY READY", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
