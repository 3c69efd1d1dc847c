"""Drive the MCP reference memory server (`@modelcontextprotocol/server-memory`, run under node) over
stdio with the official `mcp` client, so its own code writes memory.jsonl. Used by
scripts/make-peer-fixtures.sh; the names include `|` on purpose (issue #25: keys must not collide).

usage: python kg_write.py SERVER_JS OUT_JSONL
"""

import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ENTITIES = [
    {"name": "Alice", "entityType": "person", "observations": ["prefers tea", "works on billing"]},
    {"name": "Billing", "entityType": "service", "observations": ["owns invoices", "runs on Postgres"]},
    {"name": "A|x", "entityType": "thing", "observations": ["a name with a pipe"]},
    {"name": "A", "entityType": "thing", "observations": ["a plain name"]},
    {"name": "B", "entityType": "thing", "observations": []},
    {"name": "Zoë \"quoted\"", "entityType": "person", "observations": ["unicode and quotes"]},
]
RELATIONS = [
    {"from": "Alice", "to": "Billing", "relationType": "maintains"},
    {"from": "A|x", "to": "B", "relationType": "y"},  # A|x -y-> B
    {"from": "A", "to": "B", "relationType": "x|y"},  # A -x|y-> B: the same "A|x|y|B" once joined by |
    {"from": "Zoë \"quoted\"", "to": "Alice", "relationType": "mentors"},
]


async def main(server_js: str, out: str) -> None:
    params = StdioServerParameters(command="node", args=[server_js],
                                   env={**os.environ, "MEMORY_FILE_PATH": os.path.abspath(out)})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for name, args in (("create_entities", {"entities": ENTITIES}),
                           ("create_relations", {"relations": RELATIONS})):
            result = await session.call_tool(name, args)
            if result.is_error:
                raise SystemExit(f"{name} failed: {result.content}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
