"""A partner's white-label branding: the name, logo and colours of its customers' portal.

The logo is a URL the portal puts in an ``<img src>`` (never HTML): ``https://`` to a
host, at most 2,048 characters, or a ``data:image/(png|jpeg|gif|webp);base64,...`` URL
of at most 32 KiB of image (SVG is refused: it can carry script). Colours are
``#rrggbb``, answered in lower case."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from cg_bff.schemas.common import NO_NUL

MAX_URL_CHARS = 2048
MAX_LOGO_BYTES = 32 * 1024
# base64 of MAX_LOGO_BYTES, plus the longest prefix: the longest data URL that can pass
MAX_LOGO_CHARS = len("data:image/jpeg;base64,") + 4 * ((MAX_LOGO_BYTES + 2) // 3)
DATA_URL = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/]+={0,2})$")
HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_logo", message)


def check_logo_url(value: str) -> str:
    """The logo URL as given, or a refusal that says why."""
    if value.startswith("data:"):
        found = DATA_URL.match(value)
        if not found:
            raise _refuse("a data URL must be data:image/png, jpeg, gif or webp, base64-encoded")
        try:
            size = len(base64.b64decode(found.group(2), validate=True))
        except (binascii.Error, ValueError):
            raise _refuse("the data URL's base64 is not valid") from None
        if size > MAX_LOGO_BYTES:
            raise _refuse(f"the image is {size} bytes; at most {MAX_LOGO_BYTES} (32 KiB)")
        return value
    if len(value) > MAX_URL_CHARS:
        raise _refuse(f"at most {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "\"'<>\\`" for c in value):
        raise _refuse("a URL may not hold spaces, quotes, angle brackets or control characters")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise _refuse("not a URL") from None
    if parts.scheme != "https" or not parts.netloc or "@" in parts.netloc or not HOST.match(parts.netloc):
        raise _refuse("must be an https:// URL to a host (or a small data:image/... URL)")
    return value


def _one_string(value: str) -> str:
    """Text that UTF-8 can encode (no lone surrogates), so any database stores it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("invalid_text", "not valid Unicode text") from None
    if not value.strip():
        raise PydanticCustomError("invalid_text", "may not be blank")
    return value.strip()


HexColor = Annotated[
    str,
    Field(pattern=r"^#[0-9A-Fa-f]{6}$", examples=["#0b5cad"], description="#rrggbb"),
    AfterValidator(str.lower),
]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=80, pattern=NO_NUL, examples=["Acme Cloud"]), AfterValidator(_one_string)
]
LogoUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_LOGO_CHARS, examples=["https://cdn.example.com/logo.png"]),
    AfterValidator(check_logo_url),
]


class BrandingUpdate(BaseModel):
    """The whole branding (PUT replaces it); a field left out or null falls back to the
    default (the partner's name; no logo; the product's colours)."""

    display_name: DisplayName | None = None
    logo_url: LogoUrl | None = Field(
        default=None,
        description="https:// (at most 2,048 characters), or data:image/png|jpeg|gif|webp;base64 of at most "
        "32 KiB. Shown as an image only.",
    )
    primary_color: HexColor | None = Field(default=None, description="Buttons, links, the top bar.")
    accent_color: HexColor | None = Field(default=None, description="Highlights (charts, badges).")


class BrandingPublic(BaseModel):
    """What the customers' portal shows. ``display_name`` is the one to show (the partner's
    name unless one is set); ``custom_name`` says whether one is set."""

    partner_id: str
    display_name: str
    custom_name: bool
    logo_url: str | None
    primary_color: str | None
    accent_color: str | None
    updated_at: datetime | None
