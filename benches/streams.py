"""Idle SSE streams: how much memory each one costs a proxy.

    python3 benches/streams.py UPSTREAM_PORT PROXY_PORT PROXY_PID COUNT [TOKEN]

Serves, on UPSTREAM_PORT, an MCP server's GET stream that opens and then
stays silent; opens COUNT such streams through the proxy on PROXY_PORT
(a GET to /mcp, as an MCP client does for server messages), and prints the
proxy's resident memory before and with them open, and the difference per
stream in KiB. Run by benches/load.sh.
"""

import asyncio
import os
import signal
import socket
import sys
import time


def rss_kib(pid):
    total = 0
    for p in pid.split(","):
        with open(f"/proc/{p}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def upstream(reader, writer):
    try:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the proxy closes it
    except (ConnectionError, OSError):
        pass
    writer.close()


async def open_stream(port, token, streams, failures):
    # A burst of connects can overflow a listen queue: try again, briefly.
    for attempt in range(5):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            auth = f"authorization: Bearer {token}\r\n" if token else ""
            writer.write(f"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                         f"mcp-protocol-version: 2025-06-18\r\n{auth}\r\n".encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 30)
        except (ConnectionError, OSError, asyncio.TimeoutError) as error:
            if attempt == 4:
                failures.append(repr(error))
            await asyncio.sleep(0.1)
            continue
        if not status.startswith(b"HTTP/1.1 200"):
            failures.append(status.decode(errors="replace").strip() or "closed")
            writer.close()
            return
        streams.append(writer)
        return


async def serve(port):
    server = await asyncio.start_server(upstream, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


async def main(proxy_port, pid, count, token):
    # A few streams first, so that pools and buffers exist before measuring.
    streams, failures = [], []
    await asyncio.gather(*(open_stream(proxy_port, token, streams, failures) for _ in range(10)))
    await asyncio.sleep(0.5)
    before = rss_kib(pid)
    for start in range(0, count, 250):
        batch = range(start, min(count, start + 250))
        await asyncio.gather(*(open_stream(proxy_port, token, streams, failures) for _ in batch))
    await asyncio.sleep(1)
    with_streams = rss_kib(pid)
    opened = len(streams) - 10
    for writer in streams:
        writer.close()
    if failures:
        print(f"streams.py: {len(failures)} streams failed, first: {failures[0]}", file=sys.stderr)
    per = (with_streams - before) / opened if opened > 0 else 0
    print(f"{before} {with_streams} {opened} {per:.2f}")
    return 1 if failures else 0


up_port, proxy_port, pid, count = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
token = sys.argv[5] if len(sys.argv) > 5 else ""
# The upstream in a process of its own: each side holds COUNT sockets.
child = os.fork()
if child == 0:
    asyncio.run(serve(up_port))
    os._exit(0)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", up_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    code = asyncio.run(main(proxy_port, pid, count, token))
finally:
    os.kill(child, signal.SIGTERM)
    os.waitpid(child, 0)
sys.exit(code)
