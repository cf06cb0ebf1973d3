"""The value parsers of shared.config: each takes one stripped value and returns it parsed, or raises ValueError
saying what was expected (Environ turns that into a ConfigError naming the variable)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

# ASCII digits only: int() also takes Arabic-Indic or full-width digits, `5_00` and `+500`, which no documented
# value looks like.
WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}")
# A host name as DNS and the clients take it: ASCII labels (`_` for compose service names), an optional final dot.
HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(\.(?!-)[a-z0-9_-]{1,63})*\.?", re.IGNORECASE)
# What a URL path may hold as it is sent (RFC 3986 pchar and `/`): anything else must be percent-encoded.
URL_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


def whole(low: int, high: int, what: str = "a whole number") -> Callable[[str], int]:
    """A whole number in ASCII digits between `low` and `high`; `what` names the unit in the error."""

    def cast(raw: str) -> int:
        value = int(raw) if WHOLE_NUMBER.fullmatch(raw) else None
        if value is None or not low <= value <= high:
            raise ValueError(f"expected {what} between {low} and {high} (digits 0-9 only)")
        return value

    return cast


def millis(low: int, high: int) -> Callable[[str], float]:
    """Milliseconds in the environment, seconds in the settings."""
    cast = whole(low, high, "milliseconds")
    return lambda raw: cast(raw) / 1000


def choice(*choices: str) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw.lower()

    return cast


def host(raw: str) -> str:
    """A host name or an IP address as a socket takes it (GATEWAY_HOST): `0.0.0.0`, `::`, `gateway.local`.
    Was: anything, refused only by the bind after start-up, naming no variable."""
    try:
        ipaddress.ip_address(raw)
        return raw
    except ValueError:
        pass
    if raw.startswith("[") and raw.endswith("]"):
        raise ValueError(f"give an IPv6 address without brackets: {raw[1:-1]}")
    if not HOST_NAME.fullmatch(raw):
        raise ValueError("expected an IP address or a host name (ASCII letters, digits, - and ., no port)")
    return raw


def url_host(parts: SplitResult) -> None:
    """The host of an http(s):// or redis:// URL: an IP address (urlsplit checks a bracketed one) or a host name
    in ASCII. Was: `http://o c:4096` or `http://例え.jp` taken, and every call failed to resolve it, for ever."""
    name = parts.hostname or ""
    if parts.netloc.rpartition("@")[2].startswith("["):
        return
    if not HOST_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name: ASCII letters, digits, - and . (an xn-- form for others)")


def opencode_url_parts(raw: str, parts: SplitResult) -> None:
    """What an OpenCode base URL may hold: its client appends `/session/…` to it, and its GETs send the path as
    they are. Was: a query or fragment taken, and every path appended after it (`http://oc:4096?x=1/session`)."""
    if "?" in raw or "#" in raw:  # a `?` or `#` in a password must be percent-encoded too
        raise ValueError("an OpenCode URL takes no query or fragment: http://host:4096[/path]")
    if not URL_PATH.fullmatch(parts.path):
        raise ValueError("the path must be percent-encoded ASCII (a space is %20)")


def allowed_hosts(raw: str) -> tuple[str, ...]:
    """`*` (any), or host names: `gateway.example.com`, `*.example.com` (its subdomains), `127.0.0.1`, `[::1]`.
    A `Host` header is ASCII (browsers send `xn--` names), so another name would never match."""
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    if not hosts:  # Was: `,` taken as an empty list, and every request but the probes a 421
        raise ValueError("no host name: give at least one, or * for any (unset: the default)")
    for entry in hosts:
        if entry != "*" and not _allowed_host(entry.removeprefix("*.")):
            raise ValueError(
                f"{entry!r} is not a host name: expected names like gateway.example.com, *.example.com, "
                "127.0.0.1 or [::1] (no port; an xn-- form for non-ASCII names)"
            )
    return hosts


def _allowed_host(name: str) -> bool:
    if name.startswith("[") and name.endswith("]"):
        try:
            return ipaddress.ip_address(name[1:-1]).version == 6
        except ValueError:
            return False
    return HOST_NAME.fullmatch(name) is not None and not name.endswith(".")


def origins(raw: str) -> tuple[str, ...]:
    """GATEWAY_CORS_ORIGINS: `*`, or origins exactly as a browser sends them (Starlette compares the `Origin`
    header as it is). Was: `example.com`, `https://x.com/` or `HTTPS://X.COM` taken, and never matched."""
    found = tuple(o.strip() for o in raw.split(",") if o.strip())
    for origin in found:
        if origin != "*" and origin != _origin(origin):
            raise ValueError(
                f"{origin!r} is not an origin: expected scheme://host[:port] as a browser sends it"
                f" (e.g. {_origin(origin) or 'https://app.example.com'}), or *"
            )
    return found


def _origin(raw: str) -> str:
    """The origin a browser would send for `raw` (lower case, no default port, no path), or '' for none."""
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        return ""
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.username is not None or not (HOST_NAME.fullmatch(name) or name.startswith("[")):
        return ""
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{name}" + (f":{port}" if port not in (None, default) else "")


def replica_id(raw: str) -> str:
    """POLLER_ID: ASCII, as the error says (isalnum() took `réplica` and `١٢`)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", raw):
        raise ValueError("expected up to 100 characters of A-Z a-z 0-9 - _ .")
    return raw
