"""A client of the BFF's management API as a browser or a partner's script uses it, for the
devstack's seeding and the tests.

``BffClient`` keeps the session cookie and sends the session's CSRF token on every state
change (as the portal does), or sends a management API token (``BffClient(url,
token=...)``, as a script does). ``invite_and_accept`` is the whole invite flow: the
inviter's POST answers the link's token, a fresh client accepts it and comes back signed in.
"""

from __future__ import annotations

from typing import Any

import httpx

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BffError(AssertionError):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
        self.response = response


class BffClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 15,
        local_address: str | None = None,
    ) -> None:
        """``local_address``: the client's own address (e.g. 127.0.0.2: another client
        address on the loopback, for per-address throttling)."""
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1", timeout=timeout_s, headers=headers, transport=transport
        )
        self.csrf: str | None = None
        self.user: dict[str, Any] | None = None

    def __enter__(self) -> BffClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, csrf: bool = True, **kwargs: Any) -> httpx.Response:
        """One request; on a state change, the session's CSRF token unless ``csrf=False``."""
        headers = dict(kwargs.pop("headers", None) or {})
        if csrf and self.csrf and method.upper() in UNSAFE:
            headers.setdefault("X-CSRF-Token", self.csrf)
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON of a 2xx answer (None for 204); anything else raises ``BffError``."""
        response = self.request(method, path, **kwargs)
        if not response.is_success:
            raise BffError(response)
        return response.json() if response.content else None

    def sign_in(self, email: str, password: str) -> BffClient:
        body = self.ok("POST", "/auth/sign-in", json={"email": email, "password": password})
        self.csrf, self.user = body["csrf_token"], body["user"]
        return self

    def accept(self, token: str, password: str, name: str = "") -> BffClient:
        body = self.ok("POST", f"/auth/invites/{token}/accept", json={"password": password, "name": name})
        self.csrf, self.user = body["csrf_token"], body["user"]
        return self


def invite_and_accept(inviter: BffClient, path: str, body: dict[str, Any], password: str, name: str = "") -> BffClient:
    """``inviter`` POSTs the invite to ``path``; a new client accepts it with ``password``
    and is returned signed in as the new user."""
    token = inviter.ok("POST", path, json=body)["token"]
    return BffClient(inviter.base_url).accept(token, password, name)
