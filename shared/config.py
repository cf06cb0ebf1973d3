"""Settings, parsed once from the environment at start-up; the only module that reads os.environ."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from shared.errors import ConfigError

T = TypeVar("T")
LogFormat = Literal["json", "console"]
LOG_LEVELS = ("debug", "info", "warning", "error")


class Secret:
    """A string whose repr never shows it (DSN passwords, HMAC keys)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


DEFAULT_SERVER = "default"  # the one server OPENCODE_URL names when OPENCODE_SERVERS is not set
OPENCODE_USERNAME = "opencode"  # `opencode serve`'s basic-auth user unless OPENCODE_SERVER_USERNAME says otherwise
SERVER_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One `opencode serve`: its name (in jobs, rows and lists), its URL without credentials, its basic auth."""

    name: str
    url: str
    password: Secret | None = None
    username: str = OPENCODE_USERNAME

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, str(self.password)) if self.password else None


def _server(name: str, raw_url: str) -> ServerConfig:
    """A server from its URL; credentials in the URL (`http://user:password@host:4096`) become its basic auth."""
    parts = urlsplit(_url("http", "https")(raw_url))
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")
    password = Secret(unquote(parts.password)) if parts.password else None
    return ServerConfig(name, url, password, unquote(parts.username) if parts.username else OPENCODE_USERNAME)


def _servers(raw: str) -> tuple[ServerConfig, ...]:
    """`name=url,name=url`: each name once, lower-case letters, digits, `-` and `_`."""
    servers: dict[str, ServerConfig] = {}
    for item in (i.strip() for i in raw.split(",")):
        name, sep, url = item.partition("=")
        name = name.strip()
        if not sep or not SERVER_NAME.fullmatch(name):
            raise ValueError(f"expected name=url items, each name of a-z 0-9 - _ (got {item.split('=')[0]!r})")
        if name in servers:
            raise ValueError(f"server {name} is named twice")
        servers[name] = _server(name, url.strip())
    return tuple(servers.values())


def _default_replica_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the processes and the CLI are configured with; see the README's configuration table."""

    redis_url: Secret = field(default_factory=lambda: Secret("redis://localhost:6379/0"))
    database_url: Secret = field(default_factory=lambda: Secret("postgresql://localhost:5432/opencode"))
    opencode_url: str = "http://localhost:4096"
    opencode_directory: str | None = None
    opencode_timeout_s: float = 10.0
    opencode_max_response_bytes: int = 67_108_864
    opencode_retry_deadline_s: float = 60.0
    poll_interval_s: float = 0.5
    opencode_events: bool = True
    poll_interval_events_s: float = 2.0
    event_coalesce_s: float = 0.05
    orphaned_run_grace_s: float = 30.0
    lease_ttl_s: float = 5.0
    max_sessions_per_poller: int = 500
    reconcile_interval_s: float = 30.0
    session_max_failures: int = 5
    replica_id: str = field(default_factory=_default_replica_id)
    log_level: str = "info"
    log_format: LogFormat = "json"
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_auth_secret: Secret | None = None
    gateway_auth: bool = True
    gateway_cors_origins: tuple[str, ...] = ()
    gateway_header_timeout_s: float = 10.0
    gateway_keepalive_timeout_s: int = 5
    gateway_max_connections: int = 20_000
    gateway_max_header_bytes: int = 16_384
    gateway_auth_secret_previous: Secret | None = None
    gateway_allowed_hosts: tuple[str, ...] | None = None
    gateway_max_streams_per_token: int = 100
    gateway_stream_buffer_bytes: int = 8_388_608
    gateway_write_timeout_s: float = 30.0
    gateway_max_response_bytes: int = 4_194_304
    poller_metrics_port: int | None = None
    opencode_servers: tuple[ServerConfig, ...] = ()  # OPENCODE_SERVERS; empty: the one server OPENCODE_URL names
    opencode_password: Secret | None = None  # basic auth of the OPENCODE_URL server
    opencode_username: str = OPENCODE_USERNAME
    pending_request_timeout_s: float | None = None  # None: a permission request or question waits forever

    @property
    def servers(self) -> tuple[ServerConfig, ...]:
        """Every OpenCode server by name, the default one (where a job names none) first."""
        if self.opencode_servers:
            return self.opencode_servers
        return (ServerConfig(DEFAULT_SERVER, self.opencode_url, self.opencode_password, self.opencode_username),)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Parse every variable; the first bad one raises ConfigError naming it and its value."""
        env = Environ(os.environ if environ is None else environ)
        secret = env.get("GATEWAY_AUTH_SECRET", str, None)
        previous = env.get("GATEWAY_AUTH_SECRET_PREVIOUS", str, None)
        url_server = env.get("OPENCODE_URL", lambda raw: _server(DEFAULT_SERVER, raw), None)
        password = env.get("OPENCODE_SERVER_PASSWORD", str, None)
        return cls(
            redis_url=Secret(env.get("REDIS_URL", _url("redis", "rediss", "unix"), "redis://localhost:6379/0")),
            database_url=Secret(
                env.get("DATABASE_URL", _url("postgresql", "postgres"), "postgresql://localhost:5432/opencode")
            ),
            opencode_url=url_server.url if url_server is not None else "http://localhost:4096",
            opencode_servers=env.get("OPENCODE_SERVERS", _servers, ()),
            opencode_password=Secret(password) if password else (url_server.password if url_server else None),
            opencode_username=env.get("OPENCODE_SERVER_USERNAME", str, None)
            or (url_server.username if url_server else OPENCODE_USERNAME),
            opencode_directory=env.get("OPENCODE_DIRECTORY", str, None),
            opencode_timeout_s=env.get("OPENCODE_TIMEOUT_MS", _millis(100, 600_000), 10.0),
            opencode_retry_deadline_s=env.get("OPENCODE_RETRY_DEADLINE_MS", _millis(0, 86_400_000), 60.0),
            opencode_max_response_bytes=env.get("OPENCODE_MAX_RESPONSE_BYTES", _int(1_048_576, 1 << 31), 67_108_864),
            poll_interval_s=env.get("POLL_INTERVAL_MS", _millis(10, 60_000), 0.5),
            opencode_events=env.get("OPENCODE_EVENTS", _choice("on", "off"), "on") == "on",
            poll_interval_events_s=env.get("POLL_INTERVAL_EVENTS_MS", _millis(10, 600_000), 2.0),
            event_coalesce_s=env.get("EVENT_COALESCE_MS", _millis(0, 5_000), 0.05),
            orphaned_run_grace_s=env.get("ORPHANED_RUN_GRACE_MS", _millis(1_000, 86_400_000), 30.0),
            lease_ttl_s=env.get("LEASE_TTL_MS", _millis(300, 600_000), 5.0),
            max_sessions_per_poller=env.get("MAX_SESSIONS_PER_POLLER", _int(1, 100_000), 500),
            reconcile_interval_s=env.get("RECONCILE_INTERVAL_MS", _millis(100, 86_400_000), 30.0),
            session_max_failures=env.get("SESSION_MAX_FAILURES", _int(1, 1_000), 5),
            replica_id=env.get("POLLER_ID", _replica_id, None) or _default_replica_id(),
            log_level=env.get("LOG_LEVEL", _choice(*LOG_LEVELS), "info"),
            log_format=env.get("LOG_FORMAT", _choice("json", "console"), "json"),  # type: ignore[arg-type]  # checked by _choice
            gateway_host=env.get("GATEWAY_HOST", str, "127.0.0.1"),
            gateway_port=env.get("GATEWAY_PORT", _int(0, 65535), 8080),
            gateway_auth_secret=Secret(secret) if secret else None,
            gateway_auth=env.get("GATEWAY_AUTH", _choice("on", "off"), "on") == "on",
            poller_metrics_port=env.get("POLLER_METRICS_PORT", _int(1, 65535), None),
            gateway_header_timeout_s=env.get("GATEWAY_HEADER_TIMEOUT_MS", _millis(100, 600_000), 10.0),
            gateway_keepalive_timeout_s=env.get("GATEWAY_KEEPALIVE_TIMEOUT_S", _int(1, 3600), 5),
            gateway_max_connections=env.get("GATEWAY_MAX_CONNECTIONS", _int(1, 1_000_000), 20_000),
            gateway_max_header_bytes=env.get("GATEWAY_MAX_HEADER_BYTES", _int(1_024, 1_048_576), 16_384),
            pending_request_timeout_s=env.get("PENDING_REQUEST_TIMEOUT_MS", _millis(100, 2_592_000_000), None),
            gateway_cors_origins=tuple(
                o.strip() for o in env.get("GATEWAY_CORS_ORIGINS", str, "").split(",") if o.strip()
            ),
            gateway_auth_secret_previous=Secret(previous) if previous else None,
            gateway_allowed_hosts=env.get("GATEWAY_ALLOWED_HOSTS", _hosts, None),
            gateway_max_streams_per_token=env.get("GATEWAY_MAX_STREAMS_PER_TOKEN", _int(1, 1_000_000), 100),
            gateway_stream_buffer_bytes=env.get("GATEWAY_STREAM_BUFFER_BYTES", _int(65_536, 1 << 30), 8_388_608),
            gateway_write_timeout_s=env.get("GATEWAY_WRITE_TIMEOUT_MS", _millis(100, 600_000), 30.0),
            gateway_max_response_bytes=env.get("GATEWAY_MAX_RESPONSE_BYTES", _int(65_536, 1 << 30), 4_194_304),
        )


class Environ:
    """Reads one variable at a time and turns a parse failure into a ConfigError that names it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, cast: Callable[[str], T], default: T) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return cast(raw.strip())
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{name}={raw!r} is invalid: {exc}") from None


def _url(*schemes: str) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a {'/'.join(s + '://' for s in schemes)} URL")
        if parts.scheme != "unix" and not parts.hostname and parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("the URL has no host")
        return raw

    return cast


def _millis(low: int, high: int) -> Callable[[str], float]:
    def cast(raw: str) -> float:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"expected milliseconds between {low} and {high}")
        return value / 1000

    return cast


def _int(low: int, high: int) -> Callable[[str], int]:
    def cast(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"expected a whole number between {low} and {high}")
        return value

    return cast


def _choice(*choices: str) -> Callable[[str], str]:
    def cast(raw: str) -> str:
        if raw.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return raw.lower()

    return cast


def _hosts(raw: str) -> tuple[str, ...]:
    """`*` (any), or host names: `gateway.example.com`, `*.example.com` (its subdomains), `127.0.0.1`, `[::1]`."""
    hosts = tuple(h.strip().lower() for h in raw.split(",") if h.strip())
    for host in hosts:
        name = host.removeprefix("*.")
        if host != "*" and not all(c.isalnum() or c in "-.[]:" for c in name):
            raise ValueError(f"{host!r} is not a host name: expected names like gateway.example.com or *.example.com")
        if ":" in name and not name.startswith("["):
            raise ValueError(f"{host!r}: give host names without a port (an IPv6 address in brackets: [::1])")
    return hosts


def _replica_id(raw: str) -> str:
    if not all(c.isalnum() or c in "-_." for c in raw) or len(raw) > 100:
        raise ValueError("expected up to 100 characters of A-Z a-z 0-9 - _ .")
    return raw
