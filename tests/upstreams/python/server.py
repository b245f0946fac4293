"""The official Python MCP SDK server (FastMCP on Starlette and uvicorn), as
an upstream for toolgate's integration tests.

    python server.py [--json]

Listens on 127.0.0.1 at /mcp on a port the system picks, and prints
`listening PORT` once it accepts connections (a port picked by the caller
could be taken by someone else before the server binds it). --json:
stateless, answers with JSON; otherwise sessions and SSE answers.
"""

import socket
import sys

import uvicorn
from mcp.server.fastmcp import FastMCP

json_mode = "--json" in sys.argv[1:]

mcp = FastMCP(
    "python-upstream",
    host="127.0.0.1",
    stateless_http=json_mode,
    json_response=json_mode,
    log_level="WARNING",
)


@mcp.tool()
def echo(text: str) -> str:
    """Repeat the text"""
    return f"echo: {text}"


@mcp.tool()
def delete_database() -> str:
    """Drop every table"""
    return "database deleted"


for i in range(12):

    def report(i: int = i) -> str:
        return f"report {i}"

    mcp.add_tool(report, name=f"report_{i}", description=f"Report number {i}")


@mcp.resource("file:///etc/passwd")
def passwd() -> str:
    """Not for everyone"""
    return "root:x:0:0"


@mcp.resource("file:///public/readme.md")
def readme() -> str:
    """For everyone"""
    return "# readme"


@mcp.prompt()
def greet() -> str:
    """Say hello"""
    return "Hello!"


@mcp.prompt()
def admin_prompt() -> str:
    """For admins"""
    return "sudo"


class Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        print(f"listening {listener.getsockname()[1]}", flush=True)


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(1024)
config = uvicorn.Config(mcp.streamable_http_app(), log_level="warning")
Server(config).run(sockets=[listener])
