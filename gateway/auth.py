"""Who may read what: a bearer token (or `?token=` for EventSource), a JWT whose `sub` is its scope (shared.tokens)."""

from __future__ import annotations

from starlette.requests import Request

from gateway.query import query_param, single_header
from shared.errors import Forbidden, Unauthorized
from shared.tokens import Grant, Scope, verify_grant


class Auth:
    """With no secret (GATEWAY_AUTH=off) every request is allowed; otherwise each check needs a valid scope.

    `previous` is a secret being rotated out: tokens it signed are accepted until they expire.
    """

    def __init__(self, secret: str | None, previous: str | None = None) -> None:
        self._secret = secret
        self._previous = previous

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    @staticmethod
    def token(request: Request) -> str | None:
        """The request's token as sent: a Bearer `Authorization` header wins over `?token=`. Was: a second header
        or a second `?token=` was read in silence (the first header, the last parameter); now a 400 naming it."""
        header = single_header(request, "authorization") or ""
        return header[7:].strip() if header[:7].lower() == "bearer " else query_param(request, "token")

    def grant(self, request: Request) -> Grant | None:
        """The request's verified scope and expiry; None when auth is off. Raises Unauthorized without a valid token."""
        if self._secret is None:
            return None
        token = self.token(request)
        if not token:
            raise Unauthorized("a token is required: Authorization: Bearer <token>, or ?token=")
        return verify_grant(self._secret, token, previous=self._previous)

    def scope(self, request: Request) -> Scope | None:
        """The request's verified scope; None when auth is off. Raises Unauthorized without a valid token."""
        grant = self.grant(request)
        return None if grant is None else grant.scope

    def require_session(self, request: Request, session_id: str, ticket_id: str | None) -> None:
        scope = self.scope(request)
        if scope is not None and not scope.allows_session(session_id, ticket_id):
            raise Forbidden(f"the token does not cover session {session_id}")

    def refuse_missing_session(self, request: Request, session_id: str) -> None:
        """For a session that exists nowhere: the 403 a ticket token gets for another ticket's session, so that a
        404 does not tell it which ids exist (was: 404 here, 403 there). Admin and the session's own token pass on
        to the 404."""
        self.require_session(request, session_id, None)

    def require_own_session(self, request: Request, session_id: str) -> None:
        """Before any lookup: a session token for another session is a 403 whether that session exists or not (a
        404 for a missing one would tell the bearer which ids exist). Other scopes need its ticket: require_session."""
        scope = self.scope(request)
        if scope is not None and scope.kind == "session" and scope.id != session_id:
            raise Forbidden(f"the token does not cover session {session_id}")

    def require_ticket(self, request: Request, ticket_id: str) -> None:
        scope = self.scope(request)
        if scope is not None and not scope.allows_ticket(ticket_id):
            raise Forbidden(f"the token does not cover ticket {ticket_id}")

    def require_admin(self, request: Request) -> None:
        scope = self.scope(request)
        if scope is not None and not scope.is_admin:
            raise Forbidden("this endpoint needs an admin token")
