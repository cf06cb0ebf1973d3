from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings
from shared.errors import ConfigError
from shared.opencode.keepalive import DEFAULT_MAX_BODY_BYTES


def test_defaults_match_the_documented_contract():
    settings = Settings.from_env({})
    assert str(settings.redis_url) == "redis://localhost:6379/0"
    assert str(settings.database_url) == "postgresql://localhost:5432/opencode"
    assert settings.opencode_url == "http://localhost:4096"
    assert settings.poll_interval_s == 0.5
    assert settings.lease_ttl_s == 5.0
    assert settings.orphaned_run_grace_s == 30.0
    assert settings.opencode_max_response_bytes == DEFAULT_MAX_BODY_BYTES  # the clients' own default


def test_values_are_parsed_with_units():
    settings = Settings.from_env(
        {"POLL_INTERVAL_MS": "250", "LEASE_TTL_MS": "3000", "MAX_SESSIONS_PER_POLLER": "7", "LOG_FORMAT": "console"}
    )
    assert (settings.poll_interval_s, settings.lease_ttl_s, settings.max_sessions_per_poller) == (0.25, 3.0, 7)
    assert settings.log_format == "console"
    assert Settings.from_env({"ORPHANED_RUN_GRACE_MS": "45000"}).orphaned_run_grace_s == 45.0
    assert Settings.from_env({"OPENCODE_MAX_RESPONSE_BYTES": "1048576"}).opencode_max_response_bytes == 1 << 20


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POLL_INTERVAL_MS", "fast"),
        ("POLL_INTERVAL_MS", "0"),
        ("LEASE_TTL_MS", "-5"),
        ("MAX_SESSIONS_PER_POLLER", "0"),
        ("REDIS_URL", "http://localhost"),
        ("DATABASE_URL", "mysql://db"),
        ("OPENCODE_URL", "localhost:4096"),
        ("LOG_LEVEL", "loud"),
        ("LOG_FORMAT", "xml"),
        ("POLLER_ID", "has space"),
        ("ORPHANED_RUN_GRACE_MS", "500"),
        ("OPENCODE_MAX_RESPONSE_BYTES", "1000"),
        ("OPENCODE_MAX_RESPONSE_BYTES", "64MB"),
        # what a client would refuse only later (exit 1 "unexpected …", or a poller retrying forever)
        ("REDIS_URL", "redis://127.0.0.1:99999/0"),
        ("REDIS_URL", "redis://127.0.0.1:0/0"),
        ("REDIS_URL", "redis://127.0.0.1:abc/0"),
        ("REDIS_URL", "unix:"),
        ("REDIS_URL", "unix://"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=abc"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?foo=bar"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?timeout=1"),  # the gateway's fan-out client takes no timeout=
        ("REDIS_URL", "redis://127.0.0.1:6379/0?protocol=9"),
        ("REDIS_URL", "rediss://127.0.0.1:6379/0?ssl_cert_reqs=bogus"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?decode_responses=false"),
        ("REDIS_URL", "redis://127.0.0.1:6379/db1"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?db=-1"),
        ("REDIS_URL", "redis://u:%ff@127.0.0.1:6379/0"),
        ("DATABASE_URL", "postgresql://127.0.0.1:abc/db"),
        ("DATABASE_URL", "postgresql://127.0.0.1:99999/db"),
        ("DATABASE_URL", "postgresql://127.0.0.1:0/db"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?sslmode=bogus"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?foo=bar"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?target_session_attrs=primary-ish"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?ssl_min_protocol_version=TLSv9"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?keepalives_idle=soon"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?hostaddr=db.example"),
        ("DATABASE_URL", "postgresql://u@a,b/db?port=5432,5433,5434"),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db?application_name=%ff"),
        ("OPENCODE_URL", "http://127.0.0.1:0"),
        ("OPENCODE_URL", "http://例え.jp:4096"),
        ("OPENCODE_URL", "http://127.0.0.1:4096/ö"),
        ("OPENCODE_URL", "http://a%3Ab:pw@127.0.0.1:4096"),
        ("OPENCODE_URL", "http://opencode:%ff@127.0.0.1:4096"),
        ("OPENCODE_SERVERS", "a=http://127.0.0.1:0"),
        ("OPENCODE_SERVER_USERNAME", "a:b"),
        # not UTF-8 in the environment: Python holds the byte as a surrogate, which no client can encode
        *(
            (name, "value-\udcff")
            for name in (
                "OPENCODE_SERVER_USERNAME",
                "OPENCODE_SERVER_PASSWORD",
                "OPENCODE_DIRECTORY",
                "GATEWAY_AUTH_SECRET",
                "GATEWAY_AUTH_SECRET_PREVIOUS",
                "GATEWAY_HOST",
                "GATEWAY_CORS_ORIGINS",
            )
        ),
        ("DATABASE_URL", "postgresql://u@127.0.0.1:5432/db\udcff"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?client_name=\udcff"),
        ("OPENCODE_URL", "http://127.0.0.1\udcff:4096"),
        ("OPENCODE_SERVERS", "a=http://oc\udcff:4096"),
    ],
)
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert caught.value.message.startswith(f"{name}=")
    assert "\n" not in caught.value.message


def test_secrets_never_show_in_repr():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@db/x", "GATEWAY_AUTH_SECRET": "s3cret"})
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)
    assert str(settings.database_url).endswith("@db/x")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_AUTH_SECRET", "hunter2-\udcff"),
        ("OPENCODE_SERVER_PASSWORD", "hunter2-\udcff"),
        ("REDIS_URL", "redis://:hunter2@redis:99999/0"),
        ("DATABASE_URL", "postgresql://u:hunter2@db:abc/x"),
        ("DATABASE_URL", "postgresql://db/x?password=hunter2&sslmode=on"),
        ("OPENCODE_SERVERS", "a=http://opencode:hunter2@oc:0"),
        # libpq quotes the token it cannot read: the password's stray %, in the reason (was shown there)
        ("DATABASE_URL", "postgresql://u:hunter2%zz@db/x"),
        ("DATABASE_URL", "postgresql://db/x?password=hunter2%zz"),
        ("DATABASE_URL", "postgresql://u:hunter2%00@db/x"),
    ],
)
def test_a_bad_value_never_shows_a_secret(name, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert caught.value.message.startswith(f"{name}=")
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "unix:///run/redis/redis.sock?db=1"),
        ("REDIS_URL", "rediss://:p%40ss@redis:6380/2?socket_timeout=1.5&ssl_cert_reqs=none"),
        ("REDIS_URL", "redis://redis:6379/"),
        ("REDIS_URL", "redis://redis:6379/0/"),  # redis-py strips the slashes
        ("REDIS_URL", "redis://exchangemetrics:6379/0"),  # a placeholder's marker only as a word of its own
        ("DATABASE_URL", "postgresql://app:Xy7changemeQ@db/stockexchangemembers"),
        ("DATABASE_URL", "postgresql:///x?port=5432,5433"),  # the hosts from PGHOST, which libpq counts itself
        ("DATABASE_URL", "postgresql://u:p@db1:5432,db2:5433/x?sslmode=verify-full&target_session_attrs=read-write"),
        ("DATABASE_URL", "postgresql:///x?host=/var/run/postgresql&keepalives_idle=30"),
        ("DATABASE_URL", "postgresql://db/x?hostaddr=10.0.0.1&ssl_min_protocol_version=tlsv1.2"),
        ("OPENCODE_URL", "https://me:p%C3%A4ss@oc.example:8443/base/%C3%B6"),
        ("GATEWAY_AUTH_SECRET", "schlüssel-" + "x" * 32),
    ],
)
def test_what_the_clients_take_is_taken_with_or_without_their_parsers(name, value):
    """`token` skips redis-py and libpq (their imports cost it 0.2 s): each good value passes both ways."""
    for with_store_clients in (True, False):
        Settings.from_env({name: value}, with_store_clients=with_store_clients)


def test_without_the_store_clients_a_url_is_still_checked():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "redis://redis:99999/0"}, with_store_clients=False)


ROOT = Path(__file__).resolve().parents[2]
UNKNOWN = "ses_000000000000AAAAAAAAAAAAAA"


def run(args: list[str], **variables: bytes) -> subprocess.CompletedProcess[str]:
    """A process run as a shell would, with `variables` (bytes: os.environb) and no other configuration."""
    env = {b"PATH": os.environb[b"PATH"], **{name.encode(): value for name, value in variables.items()}}
    result = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, timeout=60, check=False)
    out, err = (stream.decode(errors="replace") for stream in (result.stdout, result.stderr))
    return subprocess.CompletedProcess(result.args, result.returncode, out, err)


def refused_either_way(name: str, value: str) -> list[str]:
    """The error each way of reading the settings (with the store clients' own parsers, and without: `token`) gives
    `name=value`; each must refuse it."""
    messages = []
    for with_store_clients in (True, False):
        try:
            Settings.from_env({name: value}, with_store_clients=with_store_clients)
        except ConfigError as exc:
            messages.append(exc.message)
        else:
            raise AssertionError(f"{name}={value!r} was taken (with_store_clients={with_store_clients})")
    return messages


def assert_refused(result: subprocess.CompletedProcess[str], name: str) -> None:
    """Exit 2 and one `error:` line naming the variable: no traceback, nothing on stdout."""
    assert (result.returncode, result.stdout) == (2, ""), result
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {name}="), result.stderr


@pytest.mark.parametrize(
    ("args", "name", "value"),
    [
        (["show", UNKNOWN], "REDIS_URL", b"redis://127.0.0.1:99999/0"),
        (["show", UNKNOWN], "DATABASE_URL", b"postgresql://u@127.0.0.1:5432/db\xff"),
        (["token", "--admin"], "GATEWAY_AUTH_SECRET", b"s3cret-\xff-" + b"x" * 32),
    ],
)
def test_the_cli_exits_2_naming_the_variable(args, name, value):
    result = run(["-c", "from shared.cli import main; main()", *args], **{name: value})
    assert_refused(result, name)
    assert "s3cret" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("REDIS_URL", b"redis://127.0.0.1:6379/0?socket_timeout=abc"), ("DATABASE_URL", b"postgresql://127.0.0.1:abc/db")],
)
def test_the_poller_refuses_to_start_naming_the_variable(name, value):
    """Before, a traceback (REDIS_URL), or a poller that ran on, failing each PostgreSQL connection (DATABASE_URL)."""
    assert_refused(run(["-m", "poller"], **{name: value}), name)


@pytest.mark.parametrize(
    ("name", "value"),
    [  # deploy/kubernetes/secret.yaml's placeholders, and the marker in other cases and places
        ("REDIS_URL", "redis://opencode-poller:CHANGE-ME-poller-password@redis:6379/0"),
        ("DATABASE_URL", "postgresql://opencode:CHANGE-ME-owner-password@postgres:5432/opencode"),
        ("DATABASE_URL", "postgresql://db/x?password=changeme"),
        ("OPENCODE_SERVER_PASSWORD", "Change-Me"),
        ("OPENCODE_URL", "http://opencode:CHANGE-ME@oc:4096"),
        ("OPENCODE_SERVERS", "a=http://oc:4096,b=http://opencode:ChangeMe@oc2:4096"),
        ("GATEWAY_AUTH_SECRET", "CHANGE-ME-gateway-auth-secret-of-enough-length"),
        ("GATEWAY_AUTH_SECRET_PREVIOUS", "CHANGE-ME-gateway-auth-secret-of-enough-length"),
    ],
)
def test_a_placeholder_credential_is_refused_naming_its_variable(name, value):
    """A shipped placeholder would otherwise be a password everybody knows, live (the gateway alone refused its)."""
    for message in refused_either_way(name, value):
        assert message.startswith(f"{name}=") and "placeholder" in message, message
        assert "**********" in message and "\n" not in message


def test_a_placeholder_marker_outside_credentials_is_a_plain_value():
    assert Settings.from_env({"OPENCODE_DIRECTORY": "/srv/change-me"}).opencode_directory == "/srv/change-me"


@pytest.mark.parametrize(
    ("args", "name", "value"),
    [
        (["-m", "poller"], "REDIS_URL", b"redis://opencode-poller:CHANGE-ME-poller-password@redis:6379/0"),
        (["-m", "poller"], "OPENCODE_SERVER_PASSWORD", b"CHANGE-ME"),
        (["-m", "gateway"], "DATABASE_URL", b"postgresql://opencode_gateway:CHANGE-ME-gateway-db-password@pg/x"),
        (["-c", "from shared.cli import main; main()", "migrate"], "DATABASE_URL", b"postgresql://o:CHANGE-ME@pg/x"),
    ],
)
def test_every_process_refuses_a_placeholder_credential_at_start(args, name, value):
    result = run(args, **{name: value})
    assert_refused(result, name)
    assert "placeholder" in result.stderr


def test_a_server_named_default_must_be_the_first():
    """Was: `enqueue --server default` recorded the session as naming no server, which the pollers run on the first
    server: created on one server, polled on another, it ended in error (OpenCode had no such session)."""
    with pytest.raises(ConfigError, match=r"OPENCODE_SERVERS=.* is invalid: a server named default must be the first"):
        Settings.from_env({"OPENCODE_SERVERS": "a=http://a:4096,default=http://b:4096"})
    names = [s.name for s in Settings.from_env({"OPENCODE_SERVERS": "default=http://a:4096,b=http://b:4096"}).servers]
    assert names == ["default", "b"]
