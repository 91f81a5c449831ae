"""The admin API of a node: queues and messages as JSON, queue operations, health, metrics.

Served by the one process that owns the queue (the supervisor, or a node of one process)
on the unix socket <data_dir>/admin.sock and, when `[admin] listen` is set, on TCP.
See also: hubd/admin/server.py (the HTTP side), hubd/admin/client.py (the CLI's side),
README.md (Admin API), docs/design.md (Admin API).
"""
