"""The MCP reference memory server's knowledge-graph tools, over the same operations (docs/mcp.md § Knowledge graph).

`@modelcontextprotocol/server-memory`'s names, argument shapes and result shapes: create_entities,
create_relations, add_observations, delete_entities, delete_observations, delete_relations, read_graph,
search_nodes, open_nodes, and its `memory://knowledge-graph` resource. So its users keep their prompts
and tools and point the command at memfs. Each call is one `Operations.graph` action, run by the
store's owner under its write lock (memfs.graph has the logic; this module only adapts). Listed when
MEMFS_MCP_TOOLS is graph or all.
"""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from .common import DELETE, READ, WRITE, ToolSet, tool

# The same bounds as memfs.graph (which checks them again for every other door); kept literal here so
# that listing the tools imports nothing of the store.
MAX_ITEMS = 1000
MAX_NAME = 500
PAGE_BYTES = 60_000
MAX_PAGE_ITEMS = 5000
RESOURCE_URI = "memory://knowledge-graph"

Name = Annotated[str, Field(max_length=MAX_NAME)]


class Entity(BaseModel):
    name: str = Field(description="The name of the entity")
    entityType: str = Field(description="The type of the entity")
    observations: list[str] = Field(description="An array of observation contents associated with the entity")


class Relation(BaseModel):
    from_: str = Field(alias="from", description="The name of the entity where the relation starts")
    to: str = Field(description="The name of the entity where the relation ends")
    relationType: str = Field(description="The type of the relation")

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


class EntityIn(Entity):
    name: Name = Field(description="The name of the entity")
    entityType: Name = Field(description="The type of the entity")


class ObservationsIn(BaseModel):
    entityName: Name = Field(description="The name of the entity to add the observations to")
    contents: list[str] = Field(description="An array of observation contents to add", max_length=MAX_ITEMS)


class DeletionIn(BaseModel):
    entityName: Name = Field(description="The name of the entity containing the observations")
    observations: list[str] = Field(description="An array of observations to delete", max_length=MAX_ITEMS)


class EntitiesOut(BaseModel):
    entities: list[Entity]


class RelationsOut(BaseModel):
    relations: list[Relation]


class Added(BaseModel):
    entityName: str
    addedObservations: list[str]


class AddedOut(BaseModel):
    results: list[Added]


class DoneOut(BaseModel):
    success: bool
    message: str


class GraphOut(BaseModel):
    entities: list[Entity]
    relations: list[Relation]


class Remaining(BaseModel):
    entities: int
    relations: int


class PageOut(GraphOut):
    next_cursor: str | None = Field(description="Pass it as cursor for the next page; null: this was the last.")
    remaining: Remaining = Field(description="Entities and relations after this page.")


def dump(items: list[BaseModel]) -> list[dict]:
    return [i.model_dump(by_alias=True) for i in items]


class GraphTools(ToolSet):
    """The reference memory server's tools and its knowledge-graph resource."""

    def register(self, server: MCPServer) -> None:
        super().register(server)
        server.resource(RESOURCE_URI, name="knowledge-graph", title="Knowledge Graph",
                        description=f"The knowledge graph (its first page of at most {PAGE_BYTES} bytes; read_graph "
                                    "pages through the rest)", mime_type="application/json")(self.knowledge_graph)

    async def knowledge_graph(self) -> str:
        return json.dumps(await self.graph("read_graph", {}), ensure_ascii=False, indent=2)

    async def graph(self, action: str, args: dict) -> dict:
        return await self.gw.run(lambda ops: ops.graph(action, args))

    @tool(WRITE)
    async def create_entities(self, entities: Annotated[list[EntityIn], Field(max_length=MAX_ITEMS)]) -> EntitiesOut:
        """Create multiple new entities in the knowledge graph.

        An entity whose name is already taken is left as it is (add_observations adds to it). Returns the
        entities created. Each is a memory of the store: searchable, backed up, a file a person can edit.
        """
        return EntitiesOut(**await self.graph("create_entities", {"entities": dump(entities)}))

    @tool(WRITE)
    async def create_relations(self, relations: Annotated[list[Relation], Field(max_length=MAX_ITEMS)]) -> RelationsOut:
        """Create multiple new relations between entities in the knowledge graph. Relations should be in active voice.

        A relation already there is not made twice. Returns the relations created.
        """
        return RelationsOut(**await self.graph("create_relations", {"relations": dump(relations)}))

    @tool(WRITE)
    async def add_observations(self, observations: Annotated[list[ObservationsIn], Field(max_length=MAX_ITEMS)]) -> AddedOut:
        """Add new observations to existing entities in the knowledge graph.

        Fails, changing nothing, if an entity does not exist. Returns, per entity, the observations added
        (those it did not have yet).
        """
        return AddedOut(**await self.graph("add_observations", {"observations": dump(observations)}))

    @tool(DELETE)
    async def delete_entities(self, entityNames: Annotated[list[Name], Field(
            description="An array of entity names to delete", max_length=MAX_ITEMS)]) -> DoneOut:
        """Delete multiple entities and their associated relations from the knowledge graph."""
        return DoneOut(**await self.graph("delete_entities", {"entityNames": entityNames}))

    @tool(DELETE)
    async def delete_observations(self, deletions: Annotated[list[DeletionIn], Field(max_length=MAX_ITEMS)]) -> DoneOut:
        """Delete specific observations from entities in the knowledge graph."""
        return DoneOut(**await self.graph("delete_observations", {"deletions": dump(deletions)}))

    @tool(DELETE)
    async def delete_relations(self, relations: Annotated[list[Relation], Field(
            description="An array of relations to delete", max_length=MAX_ITEMS)]) -> DoneOut:
        """Delete multiple relations from the knowledge graph. A relation that is not there is skipped."""
        return DoneOut(**await self.graph("delete_relations", {"relations": dump(relations)}))

    @tool(READ)
    async def read_graph(
        self,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page.", max_length=2000)] = None,
        limit: Annotated[int | None, Field(description=f"At most this many entities + relations (1 to {MAX_PAGE_ITEMS}).",
                                           ge=1, le=MAX_PAGE_ITEMS)] = None,
    ) -> PageOut:
        """Read the knowledge graph, a page at a time: entities (by name), then relations.

        A page's JSON stays under 60,000 bytes, so it fits a model's context; next_cursor gives the next
        page and remaining says how many entities and relations are after this one. A small graph comes
        whole in one page. To look for something, search_nodes or open_nodes are cheaper.
        """
        return PageOut(**await self.graph("read_graph", {"cursor": cursor, "limit": limit}))

    @tool(READ)
    async def search_nodes(self, query: Annotated[str, Field(
            description="The search query to match against entity names, types, and observation content",
            max_length=10_000)]) -> GraphOut:
        """Search for nodes in the knowledge graph based on a query.

        Finds the entities whose name, type or an observation contains the query, and also those that
        match it by meaning ("the person who runs the Lisbon office"), with the relations touching them.
        """
        return GraphOut(**await self.graph("search_nodes", {"query": query}))

    @tool(READ)
    async def open_nodes(self, names: Annotated[list[Name], Field(
            description="An array of entity names to retrieve", max_length=MAX_ITEMS)]) -> GraphOut:
        """Open specific nodes in the knowledge graph by their names, with every relation touching them."""
        return GraphOut(**await self.graph("open_nodes", {"names": names}))
