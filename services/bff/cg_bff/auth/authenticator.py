"""``SessionAuth``: who a request is (the ``Authenticator`` of ``cg_bff.principal``), and
the identity operations the routes call (sign-in, password change, bootstrap).

A request is authenticated by, in this order:

1. ``Authorization: Bearer cgm_...``: a management API token, looked up on every request;
   unknown or revoked: 401. Any other ``Authorization`` value: 401. No CSRF (a browser
   never attaches it by itself).
2. the ``cg_session`` cookie: a server-side session; unknown, ended or expired: 401 (the
   answer also removes the cookie). A state-changing request (POST, PUT, PATCH, DELETE)
   must carry the session's CSRF token in ``X-CSRF-Token``: missing or wrong, 403
   ``csrf_failed``.
3. neither: None (the route's dependency answers 401).
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff import errors
from cg_bff.auth.accounts import Accounts
from cg_bff.auth.apitokens import ApiTokens
from cg_bff.auth.credentials import CSRF_HEADER, SESSION_COOKIE, csrf_matches
from cg_bff.auth.invites import Invites
from cg_bff.auth.passwords import Passwords, policy_errors
from cg_bff.auth.sessions import SessionStore, clearing_cookie_header
from cg_bff.auth.throttle import Throttle
from cg_bff.models.identity import User, UserSession
from cg_bff.principal import Principal
from cg_bff.settings import Settings

log = logging.getLogger(__name__)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def client_address(request: Request) -> str:
    """The client's address as uvicorn resolved it (``X-Forwarded-For`` only from a
    trusted proxy: uvicorn's ``--forwarded-allow-ips``)."""
    return request.client.host if request.client else "unknown"


def principal_of(user: User, session: UserSession | None = None) -> Principal:
    return Principal(
        kind=user.kind,  # type: ignore[arg-type]  # the column holds admin | partner | customer
        via="session",
        user_id=user.id,
        email=user.email,
        partner_id=user.partner_id,
        customer_id=user.customer_id,
        role=user.role,  # type: ignore[arg-type]  # owner | admin | viewer, or None
        session_id=session.id if session is not None else None,
    )


def invalid_credentials() -> errors.ApiError:
    return errors.ApiError(401, "invalid_credentials", "The email or the password is not right.")


class SessionAuth:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.settings = settings
        self.passwords = Passwords()
        self.throttle = Throttle(sessions, settings)
        self.store = SessionStore(sessions, settings)
        self.accounts = Accounts(sessions)
        self.invites = Invites(sessions, settings)
        self.tokens = ApiTokens(sessions)
        self._bootstrap: asyncio.Task[None] | None = None
        email = settings.bootstrap_admin_email.strip()
        password = settings.bootstrap_admin_password.get_secret_value()
        if email and (problem := policy_errors(password, email, settings.password_min_length)):
            raise ValueError(f"CG_BFF_BOOTSTRAP_ADMIN_PASSWORD: {problem} (set a stronger one, or unset the email)")

    # -- the Authenticator contract -----------------------------------------------------

    async def authenticate(self, request: Request) -> Principal | None:
        authorization = request.headers.get("authorization")
        if authorization is not None:
            return await self._bearer(authorization)
        secret = request.cookies.get(SESSION_COOKIE)
        if not secret:
            return None
        live = await self.store.live(secret)
        if live is None:
            error = errors.unauthenticated("Your session has ended: sign in again.")
            error.headers["Set-Cookie"] = clearing_cookie_header(request, self.settings)
            raise error
        if request.method in UNSAFE_METHODS and not csrf_matches(secret, request.headers.get(CSRF_HEADER)):
            raise errors.forbidden(
                f"A signed-in change needs the session's CSRF token in the {CSRF_HEADER} header.", code="csrf_failed"
            )
        request.state.cg_session = live  # for the routes that show the session itself
        return principal_of(live.user, live.session)

    async def _bearer(self, authorization: str) -> Principal:
        scheme, _, value = authorization.partition(" ")
        token = await self.tokens.authenticate(value.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise errors.unauthenticated("The API token is not valid, or has been revoked.")
        return Principal(
            kind="partner",
            via="token",
            partner_id=token.partner_id,
            scope=token.scope,  # type: ignore[arg-type]  # read | write
            token_id=token.id,
        )

    # -- operations ---------------------------------------------------------------------

    async def sign_in(self, email: str, password: str, request: Request) -> tuple[User, str]:
        """(the user, the new session's secret), or 401 / 429."""
        await self.ready()
        attempt = await self.throttle.begin(email, client_address(request))
        user = await self.accounts.by_email(email)
        matches = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not matches:
            raise invalid_credentials()
        await self.throttle.succeeded(attempt)
        if self.passwords.needs_rehash(user.password_hash):
            await self.accounts.set_password_hash(user.id, await self.passwords.hash(password), changed=False)
        secret, _ = await self.store.create(user, client_address(request), request.headers.get("user-agent", ""))
        return user, secret

    async def start_session(self, user: User, request: Request) -> str:
        secret, _ = await self.store.create(user, client_address(request), request.headers.get("user-agent", ""))
        return secret

    async def new_password_hash(self, password: str, email: str, field: str = "password") -> str:
        """The hash of an acceptable new password, or a 400 naming ``field``."""
        if problem := policy_errors(password, email, self.settings.password_min_length):
            raise errors.invalid("The password is not acceptable.", {field: problem}, code="weak_password")
        return await self.passwords.hash(password)

    async def change_password(self, principal: Principal, current: str, new: str, request: Request) -> None:
        """Checks the current password (throttled like a sign-in), sets the new one and
        ends every other session of the user."""
        user = await self.accounts.get(principal.user_id or "")
        if user is None or principal.session_id is None:
            raise errors.unauthenticated()
        attempt = await self.throttle.begin(user.email, client_address(request))
        if not await self.passwords.verify(user.password_hash, current):
            raise errors.invalid("The current password is not right.", {"current_password": "not right"})
        await self.throttle.succeeded(attempt)
        if current == new:
            raise errors.invalid("The new password is the current one.", {"new_password": "must differ"})
        new_hash = await self.new_password_hash(new, user.email, "new_password")
        await self.accounts.set_password_hash(user.id, new_hash, changed=True)
        ended = await self.store.end_all(user.id, keep=principal.session_id)
        log.info("password changed", extra={"user_id": user.id, "sessions_ended": ended})

    # -- the bootstrap admin --------------------------------------------------------------

    async def ready(self) -> None:
        """Waits until the bootstrap admin exists (made once, by the first caller)."""
        if self._bootstrap is None or (self._bootstrap.done() and self._bootstrap.exception() is not None):
            self._bootstrap = asyncio.ensure_future(self._make_bootstrap_admin())
        await asyncio.shield(self._bootstrap)

    async def _make_bootstrap_admin(self) -> None:
        email = self.settings.bootstrap_admin_email.strip()
        if not email or await self.accounts.by_email(email) is not None:
            return
        password = self.settings.bootstrap_admin_password.get_secret_value()
        await self.accounts.ensure_admin(email, await self.passwords.hash(password))
