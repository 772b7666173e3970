"""The worker: consumes usage events from JetStream with a durable pull consumer.

This first version records each event (a structured log line and metrics); auto
top-up, deposit-line suspension and reservation expiry build on the same loop.
- ``consumer``: declaration, the fetch loop, ack after the side effect, term on poison.
- ``handlers``: what is done with each event.
"""
