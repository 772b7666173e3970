"""The management API's routes, one module per area, each with a ``router``
(``fastapi.APIRouter``) that the app mounts under ``/api/v1``. Every module here is
found and mounted by ``cg_bff.app`` (no list to keep in step)."""
