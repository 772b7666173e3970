"""Field types shared by the tenant API's schemas and paths.

An id is opaque, but it is one of ours: letters, digits, ``_`` and ``-``, at most 64
(anything else cannot name an object: a 400, never a look-up). Free text never holds a
NUL (PostgreSQL's text cannot store one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import Field

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NO_NUL = r"^[^\x00]*$"

ObjectId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=ID_PATTERN)]
