"""The official Python MCP SDK server (FastMCP on Starlette and uvicorn), as
an upstream for toolgate's integration tests.

    python server.py PORT [--json]

Listens on 127.0.0.1:PORT at /mcp. --json: stateless, answers with JSON;
otherwise sessions and SSE answers.
"""

import sys

from mcp.server.fastmcp import FastMCP

port = int(sys.argv[1])
json_mode = "--json" in sys.argv[2:]

mcp = FastMCP(
    "python-upstream",
    host="127.0.0.1",
    port=port,
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


mcp.run(transport="streamable-http")
