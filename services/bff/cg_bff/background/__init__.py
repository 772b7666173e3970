"""Long-running jobs of the BFF, started by the app's lifespan and stopped with it.

Each module here defines ``async def run(state: BffState, stop: asyncio.Event) -> None``
(e.g. the usage read model's JetStream consumer); the app starts every one as a task and,
on shutdown, sets ``stop`` and waits for them. A job must survive its dependencies being
down (retry, never end early) and must not assume it is the only replica.
"""
