"""Replicas that sync through a remote (issue #20; docs/sync.md).

Layers: `remotes` (folder / rclone), `objects` (the on-remote format, encryption), `state` (this
replica's id, clock and bookkeeping), `engine` (one sync), `merge` (per-memory merging), `compact`
(folding a replica's old objects into a base), `conflicts` (the inbox), `operations` (the memfs.ops
methods), `results` (their return types).
"""
