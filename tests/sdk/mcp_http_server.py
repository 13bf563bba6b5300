"""A streamable-HTTP MCP server (the official `mcp` package of the SDK venv) with one tool,
`echo_text`. Usage: mcp_http_server.py PORT"""
import sys
from mcp.server.fastmcp import FastMCP
mcp = FastMCP("httpecho", host="127.0.0.1", port=int(sys.argv[1]))
@mcp.tool()
def echo_text(text: str) -> str:
    """Echo the given text back."""
    return "HTTP ECHO: " + text
mcp.run(transport="streamable-http")
