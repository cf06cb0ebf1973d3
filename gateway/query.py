"""Query parameters read strictly: one value each, in UTF-8, or a 400 naming the parameter."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request

from shared.errors import InvalidInput
from shared.ids import LONE_SURROGATE


def query_param(request: Request, name: str) -> str | None:
    """A query parameter given at most once, in UTF-8. Was: the last of several was read and the others never
    checked (`limit=abc&limit=5` passed, `limit=5&limit=abc` did not), and bytes that are not UTF-8 were read as
    U+FFFD (`directory=/%ff` listed the sessions of a directory named `/\ufffd`)."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput(f"{name} is given {len(values)} times: give it once", {"parameter": name})
    if "\ufffd" in values[0] and not _utf8(request, name):
        raise InvalidInput(f"{name} is not UTF-8", {"parameter": name})
    return values[0]


def _utf8(request: Request, name: str) -> bool:
    """Whether the raw query spells `name`'s value in UTF-8 (a U+FFFD then is one the client sent)."""
    query = request.scope["query_string"].decode("latin-1")
    pairs = parse_qsl(query, keep_blank_values=True, errors="surrogateescape")
    return not any(key == name and LONE_SURROGATE.search(value) for key, value in pairs)


def single_header(request: Request, name: str) -> str | None:
    """A request header sent at most once: two `Authorization` (or `Last-Event-ID`) headers leave it open which
    one counts, and a proxy and the gateway may each pick another, so that is a 400 naming it."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"the {name} header is given {len(values)} times: give it once", {"header": name})
    return values[0] if values else None
