"""Shared building blocks for Creditgate services.

Modules, each small and with one role:

- ``logs``: structured (JSON) logging.
- ``grpc_server``: ``create_server(addr) -> (server, port)`` with health and reflection,
  and ``serve()`` that shuts down gracefully on SIGTERM/SIGINT.
- ``grpc_errors``: the interceptor every server gets, mapping a service's domain errors
  to status codes (anything else: logged, INTERNAL).
- ``grpc_client``: channel options for fast reconnect, the default RPC deadline, the
  one set of transient codes (``TRANSIENT``), and ``channel(target, tls)``.
- ``tls``: mutual TLS between the services (``CG_TLS_*``), checked at start, and the
  gRPC credentials built from it; ``grpc_authz``: who may call which method, one table per
  server, checked per call against the caller's certificate.
- ``db``: async SQLModel engines from a DSN (SQLite file by default) and Alembic at start.
- ``natsx``: NATS connection and the usage stream declaration.
- ``metrics``: Prometheus endpoint for non-HTTP services and a gRPC metrics interceptor.
- ``ids``: request ids.
- ``money``: the units (``UCR_PER_CREDIT``, ``UCR_PER_USD``, ...), in one place.
- ``retry``: ``retrying()``, the one backoff loop (jitter, a deadline that raises, a stop).
- ``openai_requests``: OpenAI's request schemas, compiled once, for the proxy and the mock.
- ``faults``, ``keysecret``, ``healthcheck``: crash points for tests, virtual key secrets,
  the health probe the containers run.
"""
