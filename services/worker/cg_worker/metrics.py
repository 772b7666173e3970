from prometheus_client import Counter, Gauge

EVENTS = Counter("cg_worker_events_total", "Events handled", ["stream", "outcome"])
LAG = Gauge("cg_worker_consumer_pending", "Messages not yet delivered to the worker", ["stream"])
TOPUPS = Counter("cg_worker_auto_topups_total", "Automatic top-ups", ["outcome"])
SUSPENSIONS = Counter(
    "cg_worker_deposit_line_total", "Customer keys suspended / resumed by the deposit line", ["action"]
)
EXHAUSTED = Counter("cg_worker_keys_exhausted_total", "Partner keys marked exhausted")
CHARGED = Counter("cg_worker_charged_ucr_total", "Micro-credits charged, as reported by usage events")
