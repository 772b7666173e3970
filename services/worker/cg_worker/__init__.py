"""The worker: turns events into money moves and key status changes.

- ``consumer``: durable JetStream pull consumers (declared at start, ack after the
  effect, ``term`` poison, ``nak`` with delay on transient errors, drain on stop).
- ``rules``: auto top-up, exhaustion and the deposit line. Events are triggers: every
  rule re-reads the current key and balance, so order, repeats and redelivery cannot
  mislead it, and several replicas may run at once.
- ``handlers``: which rules each stream's events trigger; ``metrics``.
- ``webhook_events``: the partners' webhook events (what fires each, its deterministic
  id), published for the BFF; ``webhook_delivery``: the BFF's delivery jobs POSTed,
  signed (``webhook_signing``), retried with backoff, dead-lettered.

Reservation expiry is not here: the ledger voids stale holds itself (it owns them and
runs the sweep under row locks on every replica), so no hop or queue can delay it.
"""
