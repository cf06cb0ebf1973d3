"""Who may read what: a bearer token (or `?token=` for EventSource), a JWT whose `sub` is its scope (shared.tokens)."""

from __future__ import annotations

from starlette.requests import Request

from shared.errors import Forbidden, Unauthorized
from shared.tokens import Scope, verify_token


class Auth:
    """With no secret (GATEWAY_AUTH=off) every request is allowed; otherwise each check needs a valid scope."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def scope(self, request: Request) -> Scope | None:
        """The request's verified scope; None when auth is off. Raises Unauthorized without a valid token."""
        if self._secret is None:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.query_params.get("token")
        if not token:
            raise Unauthorized("a token is required: Authorization: Bearer <token>, or ?token=")
        return verify_token(self._secret, token)

    def require_session(self, request: Request, session_id: str, ticket_id: str | None) -> None:
        scope = self.scope(request)
        if scope is not None and not scope.allows_session(session_id, ticket_id):
            raise Forbidden(f"the token does not cover session {session_id}")

    def require_ticket(self, request: Request, ticket_id: str) -> None:
        scope = self.scope(request)
        if scope is not None and not scope.allows_ticket(ticket_id):
            raise Forbidden(f"the token does not cover ticket {ticket_id}")

    def require_admin(self, request: Request) -> None:
        scope = self.scope(request)
        if scope is not None and not scope.is_admin:
            raise Forbidden("this endpoint needs an admin token")
