"""The usage read model the BFF owns: what every metered request cost, from the USAGE
stream, kept for ``settings.usage_retention_days``.

- ``ingest``: an event's row, and a batch stored exactly once (by request id);
- ``consumer``: the durable JetStream consumer ``bff-usage`` that feeds ``ingest``;
- ``queries``: series by hour or day, the request log, a key's recent spend;
- ``export``: the request log as CSV;
- ``profit``: revenue, provider cost and margin of customer-billed usage;
- ``runway``: when a key's budget runs out, or its auto top-up fires;
- ``retention``: deleting what is past the retention period;
- ``live``: server-sent events of a tenant's usage, balance and key changes;
- ``schemas``: the API's answers.

Tables: ``cg_bff.models.usage``; routes: ``cg_bff.routes.usage`` and ``cg_bff.routes.live``;
jobs: ``cg_bff.background.usage_consumer``, ``usage_retention``, ``usage_live``.
"""
