"""Shared building blocks for Creditgate services.

Modules, each small and with one role:

- ``logs``: structured (JSON) logging.
- ``grpc_server``: ``create_server(addr) -> (server, port)`` with health and reflection,
  and ``serve()`` that shuts down gracefully on SIGTERM/SIGINT.
- ``grpc_client``: channel options for fast reconnect and the default RPC deadline.
- ``db``: async SQLModel engines from a DSN (SQLite file by default) and Alembic at start.
- ``natsx``: NATS connection and the usage stream declaration.
- ``metrics``: Prometheus endpoint for non-HTTP services and a gRPC metrics interceptor.
- ``ids``: request ids.
"""
