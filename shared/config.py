"""Settings, parsed once from the environment at start-up; the only module that reads os.environ."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeVar
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from shared import config_checks as check
from shared.directories import check_directory
from shared.errors import ConfigError
from shared.ids import LONE_SURROGATE

T = TypeVar("T")
LogFormat = Literal["json", "console"]
LOG_LEVELS = ("debug", "info", "warning", "error")
MASK = "**********"  # a secret, wherever one would show: reprs, error messages
SECRET_VARIABLES = frozenset({"GATEWAY_AUTH_SECRET", "GATEWAY_AUTH_SECRET_PREVIOUS", "OPENCODE_SERVER_PASSWORD"})
# Every variable that carries a credential (a secret, or a URL with a password in it): none may be a placeholder.
CREDENTIAL_VARIABLES = SECRET_VARIABLES | {"REDIS_URL", "DATABASE_URL", "OPENCODE_URL", "OPENCODE_SERVERS"}
# The marker of every placeholder in compose and deploy/ (CHANGE-ME, changeme), as a word of its own: a host such as
# exchangemetrics is none. The same pattern guards deploy/postgres-readonly.sql (POSIX regex, lower case).
PLACEHOLDER_PATTERN = "(^|[^a-z0-9])change-?me([^a-z0-9]|$)"
_PLACEHOLDER = re.compile(PLACEHOLDER_PATTERN)
SHOWN_CHARS = 200  # of a bad value in its error: enough to recognise it, not a screenful
URL_PASSWORDS = (re.compile(r"(://[^:/@?#,]*:)([^@]*)(?=@)"), re.compile(r"((?:^|[?&\s])password=)([^&\s]*)"))


class Secret:
    """A string whose repr never shows it (DSN passwords, HMAC keys)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

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
    check.opencode_url_parts(raw_url, parts)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)).rstrip("/")
    if not url.isascii():  # the GET client writes the Host header and the path as they are
        raise ValueError("expected an ASCII URL: percent-encode the path, give a host name in its xn-- form")
    password = Secret(unquote(parts.password)) if parts.password else None
    return ServerConfig(
        name, url, password, _username(unquote(parts.username)) if parts.username else OPENCODE_USERNAME
    )


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
    if DEFAULT_SERVER in servers and next(iter(servers)) != DEFAULT_SERVER:
        # a session that names no server runs on the first one and is shown as `default` until its owner records
        # the first one's name: another server of that name would be shown its sessions, and was given them by
        # enqueue (recorded as naming none)
        raise ValueError(f"a server named {DEFAULT_SERVER} must be the first")
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
    def from_env(cls, environ: Mapping[str, str] | None = None, *, with_store_clients: bool = True) -> Settings:
        """Parse every variable; the first bad one raises ConfigError naming it and its value (secrets masked).

        REDIS_URL and DATABASE_URL are parsed by redis-py and libpq themselves, so a URL their clients would
        refuse stops start-up rather than a first connection. `with_store_clients=False` skips only that parse,
        whose imports cost a command that reaches no store (`token`) 0.2 s; every other check still runs.
        """
        env = Environ(os.environ if environ is None else environ)
        redis_url = _redis_url if with_store_clients else _redis_form
        database_url = _database_url if with_store_clients else _url("postgresql", "postgres")
        secret = env.get("GATEWAY_AUTH_SECRET", str, None)
        previous = env.get("GATEWAY_AUTH_SECRET_PREVIOUS", str, None)
        url_server = env.get("OPENCODE_URL", lambda raw: _server(DEFAULT_SERVER, raw), None)
        password = env.get("OPENCODE_SERVER_PASSWORD", str, None)
        return cls(
            redis_url=Secret(env.get("REDIS_URL", redis_url, "redis://localhost:6379/0")),
            database_url=Secret(env.get("DATABASE_URL", database_url, "postgresql://localhost:5432/opencode")),
            opencode_url=url_server.url if url_server is not None else "http://localhost:4096",
            opencode_servers=env.get("OPENCODE_SERVERS", _servers, ()),
            opencode_password=Secret(password) if password else (url_server.password if url_server else None),
            opencode_username=env.get("OPENCODE_SERVER_USERNAME", _username, None)
            or (url_server.username if url_server else OPENCODE_USERNAME),
            opencode_directory=env.get("OPENCODE_DIRECTORY", check_directory, None),  # as --directory
            opencode_timeout_s=env.get("OPENCODE_TIMEOUT_MS", check.millis(100, 600_000), 10.0),
            opencode_retry_deadline_s=env.get("OPENCODE_RETRY_DEADLINE_MS", check.millis(0, 86_400_000), 60.0),
            opencode_max_response_bytes=env.get(
                "OPENCODE_MAX_RESPONSE_BYTES", check.whole(1_048_576, 1 << 31), 67_108_864
            ),
            poll_interval_s=env.get("POLL_INTERVAL_MS", check.millis(10, 60_000), 0.5),
            opencode_events=env.get("OPENCODE_EVENTS", check.choice("on", "off"), "on") == "on",
            poll_interval_events_s=env.get("POLL_INTERVAL_EVENTS_MS", check.millis(10, 600_000), 2.0),
            event_coalesce_s=env.get("EVENT_COALESCE_MS", check.millis(0, 5_000), 0.05),
            orphaned_run_grace_s=env.get("ORPHANED_RUN_GRACE_MS", check.millis(1_000, 86_400_000), 30.0),
            lease_ttl_s=env.get("LEASE_TTL_MS", check.millis(300, 600_000), 5.0),
            max_sessions_per_poller=env.get("MAX_SESSIONS_PER_POLLER", check.whole(1, 100_000), 500),
            reconcile_interval_s=env.get("RECONCILE_INTERVAL_MS", check.millis(100, 86_400_000), 30.0),
            session_max_failures=env.get("SESSION_MAX_FAILURES", check.whole(1, 1_000), 5),
            replica_id=env.get("POLLER_ID", check.replica_id, None) or _default_replica_id(),
            log_level=env.get("LOG_LEVEL", check.choice(*LOG_LEVELS), "info"),
            log_format=env.get("LOG_FORMAT", check.choice("json", "console"), "json"),  # type: ignore[arg-type]  # checked by choice
            gateway_host=env.get("GATEWAY_HOST", check.host, "127.0.0.1"),
            gateway_port=env.get("GATEWAY_PORT", check.whole(1, 65535), 8080),
            gateway_auth_secret=Secret(secret) if secret else None,
            gateway_auth=env.get("GATEWAY_AUTH", check.choice("on", "off"), "on") == "on",
            poller_metrics_port=env.get("POLLER_METRICS_PORT", check.whole(1, 65535), None),
            gateway_header_timeout_s=env.get("GATEWAY_HEADER_TIMEOUT_MS", check.millis(100, 600_000), 10.0),
            gateway_keepalive_timeout_s=env.get("GATEWAY_KEEPALIVE_TIMEOUT_S", check.whole(1, 3600), 5),
            gateway_max_connections=env.get("GATEWAY_MAX_CONNECTIONS", check.whole(1, 1_000_000), 20_000),
            gateway_max_header_bytes=env.get("GATEWAY_MAX_HEADER_BYTES", check.whole(1_024, 1_048_576), 16_384),
            pending_request_timeout_s=env.get("PENDING_REQUEST_TIMEOUT_MS", check.millis(100, 2_592_000_000), None),
            gateway_cors_origins=env.get("GATEWAY_CORS_ORIGINS", check.origins, ()),
            gateway_auth_secret_previous=Secret(previous) if previous else None,
            gateway_allowed_hosts=env.get("GATEWAY_ALLOWED_HOSTS", check.allowed_hosts, None),
            gateway_max_streams_per_token=env.get("GATEWAY_MAX_STREAMS_PER_TOKEN", check.whole(1, 1_000_000), 100),
            gateway_stream_buffer_bytes=env.get("GATEWAY_STREAM_BUFFER_BYTES", check.whole(65_536, 1 << 30), 8_388_608),
            gateway_write_timeout_s=env.get("GATEWAY_WRITE_TIMEOUT_MS", check.millis(100, 600_000), 30.0),
            gateway_max_response_bytes=env.get("GATEWAY_MAX_RESPONSE_BYTES", check.whole(65_536, 1 << 30), 4_194_304),
        )


def is_placeholder(value: str) -> bool:
    """Whether a value still holds one of the deployment files' CHANGE-ME placeholders, in any case: shipped
    manifests are applied as they are, and a placeholder that works would be a password everybody knows."""
    return _PLACEHOLDER.search(value.lower()) is not None


def _not_placeholder(raw: str) -> str:
    if is_placeholder(raw):
        raise ValueError("it holds a placeholder of the deployment files (CHANGE-ME): set the real credential")
    return raw


class Environ:
    """Reads one variable at a time and turns a parse failure into a ConfigError that names it."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, cast: Callable[[str], T], default: T) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = _utf8(raw.strip())
            return cast(_not_placeholder(value) if name in CREDENTIAL_VARIABLES else value)
        except (ValueError, TypeError) as exc:
            reason = _masked(name, raw, " ".join(str(exc).split()))  # one line, whatever the parser said
            raise ConfigError(f"{name}={_shown(name, raw)!r} is invalid: {reason}") from None


def _shown(name: str, raw: str) -> str:
    """The value as an error shows it: a secret, or a URL's password, masked."""
    return MASK if name in SECRET_VARIABLES else shown_value(raw)


def shown_value(raw: str) -> str:
    """A value (a URL) as an error may show it: a password in it masked, and cut short."""
    for password in URL_PASSWORDS:  # user:password@, and ?password=
        raw = password.sub(rf"\g<1>{MASK}", raw)
    # Was: a 5,000-digit number shown whole, with Python's advice to raise its digit limit.
    return raw if len(raw) <= SHOWN_CHARS else raw[:SHOWN_CHARS] + "…"


def _masked(name: str, raw: str, reason: str) -> str:
    """The parser's reason, with every secret of the value masked in it too: libpq quotes the token it could not
    read (a password's stray `%`, as "hunter2%zz")."""
    secrets = [raw.strip()] if name in SECRET_VARIABLES else []
    for password in URL_PASSWORDS:
        secrets += [match.group(2) for match in password.finditer(raw)]
    for secret in sorted({s for found in secrets if found for s in (found, unquote(found))}, key=len, reverse=True):
        reason = reason.replace(secret, MASK)
    return reason


def _utf8(raw: str) -> str:
    """Every value is sent on as UTF-8 (keys, URLs, headers, HMAC keys); one that was not UTF-8 in the
    environment reaches Python as surrogates, and would fail only when first encoded, naming nothing."""
    found = LONE_SURROGATE.search(raw)  # what UTF-8 cannot encode, and surrogateescape makes of bytes that were not
    if found is not None:
        raise ValueError(f"not valid UTF-8 (character {found.start() + 1})")
    return raw


def _url(*schemes: str) -> Callable[[str], str]:
    """Scheme, host, port and user of a URL; a postgresql:// one is left to libpq's rules (_database_url)."""

    def cast(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ValueError(f"expected a {'/'.join(s + '://' for s in schemes)} URL")
        if parts.scheme in ("postgresql", "postgres"):
            return raw
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the URL has no host")
        if parts.scheme != "unix":
            check.url_host(parts)
        _port(parts)
        for userinfo in (parts.username, parts.password):
            try:
                unquote(userinfo or "", errors="strict")  # the clients' unquote would turn it into U+FFFD
            except UnicodeDecodeError:
                raise ValueError("a percent-escape in the user or password is not UTF-8") from None
        return raw

    return cast


def _port(parts: SplitResult) -> None:
    """urlsplit raises for a port past 65535 only when asked, and takes 0, where nothing can listen."""
    try:
        port = parts.port
    except ValueError:  # not a number, or past 65535
        port = 0
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")


def _username(raw: str) -> str:
    """Basic auth joins user and password with `:`, so a user name cannot hold one (RFC 7617)."""
    if ":" in raw:
        raise ValueError("a basic-auth user name cannot contain ':'")
    return raw


def _redis_form(raw: str) -> str:
    """What needs no redis-py: scheme, host, port, a unix:// socket path, a database number as the path."""
    parts = urlsplit(_url("redis", "rediss", "unix")(raw))
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix:// URL needs the socket's path: unix:///run/redis.sock")
    if parts.scheme != "unix" and not re.fullmatch(r"/*[0-9]*/*", unquote(parts.path)):
        raise ValueError("the path must be a database number: redis://host:6379/0")  # redis-py ignores any other
    return raw


def _redis_url(raw: str) -> str:
    """_redis_form, then redis-py's own parse; imported here, so `token` never loads redis-py."""
    from shared.store.urls import check_redis_url

    return check_redis_url(_redis_form(raw))


def _database_url(raw: str) -> str:
    """The scheme, then libpq's own parse and rules; imported here, so `token` never loads psycopg."""
    from shared.store.urls import check_database_url

    return check_database_url(_url("postgresql", "postgres")(raw))
