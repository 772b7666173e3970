"""The BFF's tables, one module per job (each with its own Alembic migration):

- ``identity``: users, sessions, management API tokens, invites, sign-in attempts;
- ``usage``: the usage read model (the request log and hourly aggregates);
- ``webhooks``: partners' webhook endpoints and the deliveries made to them;
- ``tenant``: what each Idempotency-Key was first used for;
- ``branding``: a partner's white-label name, logo and colours.

Importing this package imports every module, so ``SQLModel.metadata`` knows every table.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
