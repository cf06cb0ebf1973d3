from __future__ import annotations

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
