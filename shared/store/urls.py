"""REDIS_URL and DATABASE_URL as redis-py and libpq will read them, checked at start-up without connecting.

A URL either client would refuse only at its first connection is otherwise an `unexpected …` exit 1 from the
CLI, a traceback from the poller, or a poller retrying a connection forever. shared.config calls these (its
only imports of redis-py and psycopg) after its own checks of the scheme, host and port; each raises
ValueError, which it turns into a ConfigError naming the variable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from psycopg import Error as PsycopgError
from psycopg.conninfo import conninfo_to_dict
from redis.asyncio.connection import ConnectionPool
from redis.exceptions import RedisError

# Values libpq checks only as it connects (libpq 18's connectOptions2); conninfo_to_dict takes any.
LIBPQ_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "min_protocol_version": ("3.0", "3.2", "latest"),
    "max_protocol_version": ("3.0", "3.2", "latest"),
}
LIBPQ_TLS_VERSIONS = ("", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3")  # ssl_min/max_protocol_version, any case
LIBPQ_INTEGERS = "connect_timeout keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout"


def check_redis_url(raw: str) -> str:
    """Parsed by redis-py itself, and made into a connection as the clients make them (nothing connects): an
    option it would refuse at the first command is refused now."""
    try:
        pool = ConnectionPool.from_url(raw)  # Redis.from_url's pool (the gateway's fan-out), the stricter of two
        pool.connection_class(**pool.connection_kwargs)  # pool.make_connection(), which mypy sees untyped
    except TypeError as exc:  # an option only the connection class looks at
        raise ValueError(f"redis-py does not take that query option ({exc})") from None
    except RedisError as exc:
        raise ValueError(str(exc)) from None
    options = pool.connection_kwargs
    if options.get("db", 0) < 0:
        raise ValueError("the database number cannot be negative")
    if "decode_responses" in options:  # a string here, so true even when "false"; the clients read bytes
        raise ValueError("decode_responses cannot be set in the URL")
    return raw


def check_database_url(raw: str) -> str:
    """Parsed by libpq itself (syntax, unknown options, percent-escapes), then the values libpq checks only
    when it connects, checked as it does: a DSN PostgreSQL would never be asked about is no outage."""
    try:
        params = conninfo_to_dict(raw)
    except PsycopgError as exc:  # without the token libpq quotes, which may be (part of) the password
        raise ValueError(re.sub(r'"[^"]*"', '"…"', str(exc))) from None
    except UnicodeDecodeError:
        raise ValueError("a percent-escape in it is not UTF-8") from None
    _libpq_values({key: str(value) for key, value in params.items()})
    return raw


def _libpq_values(params: Mapping[str, str]) -> None:
    """The options libpq would refuse as it connects, which the poller would otherwise retry forever."""
    for key, allowed in LIBPQ_CHOICES.items():
        if key in params and params[key] not in allowed:
            raise ValueError(f"invalid {key} value {params[key]!r}: expected one of {', '.join(allowed)}")
    for key in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        if params.get(key, "").lower() not in LIBPQ_TLS_VERSIONS:
            raise ValueError(f"invalid {key} value {params[key]!r}: expected TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3")
    for key in LIBPQ_INTEGERS.split():
        if key in params:
            _libpq_int(key, params[key])
    _libpq_hosts(params)


def _libpq_hosts(params: Mapping[str, str]) -> None:
    """Each hostaddr a numeric address, each port 1-65535: as many of each as hosts (or one port for all)."""
    hosts, addrs, ports = (params[key].split(",") if params.get(key) else [] for key in ("host", "hostaddr", "port"))
    if hosts and addrs and len(hosts) != len(addrs):
        raise ValueError(f"{len(hosts)} host names but {len(addrs)} hostaddr values")
    for addr in filter(None, addrs):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"hostaddr {addr!r} is not an IP address (a host name goes in host)") from None
    count = max(len(hosts), len(addrs), 1)
    # hosts the URL does not name come from PGHOST, PGHOSTADDR or a service file, which libpq counts itself
    named = (hosts or addrs) and "service" not in params
    if named and len(ports) > 1 and len(ports) != count:
        raise ValueError(f"{len(ports)} ports for {count} hosts")
    for port in filter(None, ports):  # an empty one is the default port
        if not 1 <= _libpq_int("port", port) <= 65535:
            raise ValueError(f"invalid port number {port!r}: expected 1 to 65535")


def _libpq_int(key: str, value: str) -> int:
    """As libpq's parse_int_param: a C int, blanks around it allowed."""
    text = value.strip(" \t\n\r\f\v")
    if not re.fullmatch(r"[+-]?[0-9]+", text) or not -(2**31) <= int(text) < 2**31:
        raise ValueError(f"invalid integer value {value!r} for {key}")
    return int(text)
