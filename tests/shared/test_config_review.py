"""Values each variable was given and taken although no client could use them, or that stopped a process only
after it had started, naming nothing; and combinations of variables where one was silently ignored."""

from __future__ import annotations

import re
import socket

import pytest

from gateway.main import check_auth
from shared.config import Settings
from shared.errors import ConfigError
from tests.shared.test_config import ROOT, assert_refused, refused_either_way, run

NUMBERS = [  # every whole-number variable, and a value inside its range
    ("OPENCODE_TIMEOUT_MS", "2000"),
    ("OPENCODE_RETRY_DEADLINE_MS", "2000"),
    ("OPENCODE_MAX_RESPONSE_BYTES", "2000000"),
    ("POLL_INTERVAL_MS", "2000"),
    ("POLL_INTERVAL_EVENTS_MS", "2000"),
    ("EVENT_COALESCE_MS", "2000"),
    ("ORPHANED_RUN_GRACE_MS", "2000"),
    ("LEASE_TTL_MS", "2000"),
    ("MAX_SESSIONS_PER_POLLER", "200"),
    ("RECONCILE_INTERVAL_MS", "2000"),
    ("SESSION_MAX_FAILURES", "20"),
    ("PENDING_REQUEST_TIMEOUT_MS", "2000"),
    ("POLLER_METRICS_PORT", "2000"),
    ("GATEWAY_PORT", "2000"),
    ("GATEWAY_HEADER_TIMEOUT_MS", "2000"),
    ("GATEWAY_KEEPALIVE_TIMEOUT_S", "20"),
    ("GATEWAY_MAX_CONNECTIONS", "2000"),
    ("GATEWAY_MAX_HEADER_BYTES", "2000"),
    ("GATEWAY_MAX_STREAMS_PER_TOKEN", "2000"),
    ("GATEWAY_STREAM_BUFFER_BYTES", "2000000"),
    ("GATEWAY_WRITE_TIMEOUT_MS", "2000"),
    ("GATEWAY_MAX_RESPONSE_BYTES", "2000000"),
]
ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
FULL_WIDTH = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")


def _spellings(value: str) -> list[str]:
    """The same number as int() also reads it, and forms it refuses, each of which must be refused."""
    return [
        value.translate(ARABIC_INDIC),
        value.translate(FULL_WIDTH),
        f"{value[0]}_{value[1:]}",
        f"+{value}",
        f"{value}.0",
        f"{value[:-1]}e1",
        hex(int(value)),
    ]


@pytest.mark.parametrize(("name", "value"), NUMBERS)
def test_a_number_is_ascii_digits_only(name, value):
    """Was: 2000 in Arabic-Indic or full-width digits, `2_000` and `+2000` taken as 2000 (int() reads them all),
    where every documented value, and every other reader of the same ConfigMap, sees something else."""
    assert Settings.from_env({name: value}) is not None
    for spelling in _spellings(value):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({name: spelling})
        message = caught.value.message
        assert message.startswith(f"{name}=") and "between" in message and "\n" not in message, message


@pytest.mark.parametrize("name", [name for name, _ in NUMBERS])
def test_a_huge_number_is_refused_in_a_short_line(name):
    """Was: the 5,000 digits shown whole, then Python's advice to call sys.set_int_max_str_digits()."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: "9" * 5000})
    message = caught.value.message
    assert len(message) < 400 and "set_int_max_str_digits" not in message, message
    assert message.startswith(f"{name}='999") and "between" in message


def test_the_gateway_port_is_one_a_client_can_reach():
    """Was: GATEWAY_PORT=0 taken, and the gateway listened on a port chosen by the kernel, which nothing shows."""
    with pytest.raises(ConfigError, match=r"^GATEWAY_PORT='0' is invalid: expected a whole number between 1 and"):
        Settings.from_env({"GATEWAY_PORT": "0"})


@pytest.mark.parametrize("value", ["not a host", "[::1]", "http://gateway", "1.2.3.4:80", "héllo", "-gw", "a..b"])
def test_a_gateway_host_that_cannot_be_bound_is_refused(value):
    """Was: any value taken; the gateway started, then uvicorn failed to bind (`Name or service not known`,
    exit 3), naming no variable."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GATEWAY_HOST": value})
    assert caught.value.message.startswith("GATEWAY_HOST=")


@pytest.mark.parametrize("value", ["0.0.0.0", "::", "::1", "127.0.0.1", "localhost", "gateway.internal", "gw_1"])
def test_a_gateway_host_is_an_address_or_a_name(value):
    assert Settings.from_env({"GATEWAY_HOST": value}).gateway_host == value


def test_the_gateway_refuses_a_bad_host_before_it_starts():
    assert_refused(run(["-m", "gateway"], GATEWAY_AUTH=b"off", GATEWAY_HOST=b"not a host"), "GATEWAY_HOST")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # the client appends /session/... to the URL: after a query or fragment, that is no path
        ("OPENCODE_URL", "http://oc:4096?x=1"),
        ("OPENCODE_URL", "http://oc:4096/#top"),
        ("OPENCODE_URL", "http://oc:4096?"),
        ("OPENCODE_SERVERS", "a=http://oc:4096/base?token=1"),
        # a host no resolver takes: every call failed as an outage, retried for ever
        ("OPENCODE_URL", "http://o c:4096"),
        ("OPENCODE_URL", "http://oc%2Fx:4096"),
        ("OPENCODE_URL", "http://-oc:4096"),
        ("OPENCODE_SERVERS", "a=http://oc:4096,b=http://o c:4096"),
        ("REDIS_URL", "redis://re dis:6379/0"),
        ("REDIS_URL", "rediss://ré.example:6380/0"),
        # a path the GET client sends as it is: `GET /a b/session` is no request line
        ("OPENCODE_URL", "http://oc:4096/a b"),
        ("OPENCODE_URL", "http://oc:4096/%zz"),
    ],
)
def test_a_url_its_client_cannot_use_is_refused(name, value):
    for message in refused_either_way(name, value):
        assert message.startswith(f"{name}="), message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OPENCODE_URL", "http://[::1]:4096/base/%C3%B6"),
        ("OPENCODE_URL", "https://opencode.internal."),
        ("OPENCODE_URL", "http://opencode_1:4096"),  # a compose service name
        ("OPENCODE_SERVERS", "a=http://oc:4096,b=http://u:p%3Fw%23@xn--e1afmkfd.example:4096"),
        ("REDIS_URL", "rediss://[::1]:6380/1"),
        ("REDIS_URL", "unix:///run/redis/redis.sock?db=1"),
    ],
)
def test_a_usable_url_is_still_taken(name, value):
    Settings.from_env({name: value})


@pytest.mark.parametrize("value", ["relative/repo", ".", "/srv/a\x00b", "/" + "a" * 4096])
def test_opencode_directory_is_an_absolute_path(value):
    """Was: any value taken, where `enqueue --directory` refuses the same: OpenCode then refused every call of
    each session that names no directory, once it ran."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"OPENCODE_DIRECTORY": value})
    assert caught.value.message.startswith("OPENCODE_DIRECTORY=")


@pytest.mark.parametrize(
    "value",
    [
        ",",
        " , ",
        "*.",
        "g\u00e4teway.example",
        "gat\u0435way.example",
        "[::1",
        "[nothost]",
        "a..b",
        "\u0661\u0662\u0667.0.0.1",
    ],
)
def test_allowed_hosts_that_no_host_header_matches_are_refused(value):
    """Was: taken; `,` as an empty list (every request but the probes a 421), the others as names no `Host`
    header holds (it is ASCII: browsers send xn-- names)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GATEWAY_ALLOWED_HOSTS": value})
    assert caught.value.message.startswith("GATEWAY_ALLOWED_HOSTS=")


def test_allowed_hosts_take_names_wildcards_and_addresses():
    hosts = "Gateway.Example.com, *.example.org, 127.0.0.1, [::1], xn--e1afmkfd.example, *"
    assert Settings.from_env({"GATEWAY_ALLOWED_HOSTS": hosts}).gateway_allowed_hosts == (
        "gateway.example.com",
        "*.example.org",
        "127.0.0.1",
        "[::1]",
        "xn--e1afmkfd.example",
        "*",
    )


@pytest.mark.parametrize(
    ("value", "suggested"),
    [
        ("example.com", "https://app.example.com"),
        ("https://app.example.com/", "https://app.example.com"),
        ("https://app.example.com/ui", "https://app.example.com"),
        ("HTTPS://App.Example.com", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://localhost:5173?x=1", "http://localhost:5173"),
        ("ftp://files.example.com", "https://app.example.com"),
        ("null", "https://app.example.com"),
    ],
)
def test_a_cors_origin_is_one_a_browser_sends(value, suggested):
    """Was: taken, and compared with the `Origin` header as it is (`https://app.example.com`, no path, lower
    case, no default port): the browser's calls were refused, with nothing saying why."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GATEWAY_CORS_ORIGINS": f"https://ok.example.com, {value}"})
    message = caught.value.message
    assert message.startswith("GATEWAY_CORS_ORIGINS=") and f"(e.g. {suggested})" in message, message


def test_cors_origins_as_browsers_send_them_are_taken():
    value = " https://app.example.com , http://localhost:5173,http://[::1]:3000, *,"
    assert Settings.from_env({"GATEWAY_CORS_ORIGINS": value}).gateway_cors_origins == (
        "https://app.example.com",
        "http://localhost:5173",
        "http://[::1]:3000",
        "*",
    )


@pytest.mark.parametrize("value", ["réplica-1", "\u0661\u0662", "poller\u00a0one"])
def test_poller_id_is_the_ascii_its_error_names(value):
    """Was: `réplica-1` and Arabic-Indic digits taken (str.isalnum), though the error says A-Z a-z 0-9 - _ ."""
    with pytest.raises(ConfigError, match=r"^POLLER_ID=.* expected up to 100 characters of A-Z a-z 0-9 - _ \."):
        Settings.from_env({"POLLER_ID": value})


@pytest.mark.parametrize("name", ["GATEWAY_AUTH_SECRET", "GATEWAY_AUTH_SECRET_PREVIOUS"])
def test_gateway_auth_off_with_a_secret_is_refused(name):
    """Was: a secret turned tokens on whatever GATEWAY_AUTH said, so GATEWAY_AUTH=off served every request a 401
    (and a previous secret alone was dropped without a word)."""
    settings = Settings.from_env({"GATEWAY_AUTH": "off", name: "s3cret-" + "x" * 40})
    with pytest.raises(ConfigError) as caught:
        check_auth(settings)
    message = caught.value.message
    assert message.startswith("GATEWAY_AUTH='off' is invalid") and name in message and "s3cret" not in message
    check_auth(Settings.from_env({"GATEWAY_AUTH": "on", name: "s3cret-" + "x" * 40}))
    check_auth(Settings.from_env({"GATEWAY_AUTH": "off"}))


def test_the_gateway_refuses_auth_off_with_a_secret_at_start():
    result = run(["-m", "gateway"], GATEWAY_AUTH=b"off", GATEWAY_AUTH_SECRET=b"s3cret-" + b"x" * 40)
    assert_refused(result, "GATEWAY_AUTH")
    assert "s3cret" not in result.stderr


def test_the_poller_refuses_a_metrics_port_in_use():
    """Was: a traceback from inside the running replica (`Address already in use`), naming no variable."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["-m", "poller"], POLLER_METRICS_PORT=str(port).encode())
    assert_refused(result, "POLLER_METRICS_PORT")
    assert "Traceback" not in result.stderr and "in use" in result.stderr


def _readme_ranges() -> dict[str, tuple[int, int]]:
    """The `low\u2013high` (an en dash) each row of the README's configuration table ends with, by variable."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1].split("\n## ")[0]
    found = {}
    for names, low, high in re.findall(r"^\| (`[A-Z_]+`(?: / `[A-Z_]+`)?) \|.*`(\d+)\u2013(\d+)` \|$", section, re.M):
        found[names.split(" / ")[-1].strip("`")] = (int(low), int(high))
    return found


def test_every_number_has_its_range_in_the_readme():
    """Was: no range documented, so ORPHANED_RUN_GRACE_MS=500 or GATEWAY_STREAM_BUFFER_BYTES=1000 was refused
    for a reason the README did not give (and GATEWAY_PORT took a 0 it does not list)."""
    ranges = _readme_ranges()
    assert set(ranges) == {name for name, _ in NUMBERS}
    for name, (low, high) in ranges.items():
        for value in (low, high):
            Settings.from_env({name: str(value)})
        for value in (low - 1, high + 1):
            with pytest.raises(ConfigError, match=f"^{name}="):
                Settings.from_env({name: str(value)})


def test_the_gateway_refuses_a_port_in_use_at_start():
    """Was: uvicorn's exit 3 ("address already in use") after start-up, naming no variable."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run(["-m", "gateway"], GATEWAY_AUTH=b"off", GATEWAY_PORT=str(port).encode())
    assert_refused(result, "GATEWAY_PORT")
    assert "Traceback" not in result.stderr and "in use" in result.stderr


def test_opencode_directory_takes_one_spelling_and_refuses_what_opencode_decodes_again():
    """As `--directory`: `/srv/repo/` and `/srv/x/../repo` are `/srv/repo` (was: each its own place), and `%20`
    is refused (OpenCode decodes `?directory=` once more: the session ran in another directory)."""
    for spelling in ("/srv/repo/", "//srv//repo", "/srv/x/../repo", "/srv/./repo"):
        assert Settings.from_env({"OPENCODE_DIRECTORY": spelling}).opencode_directory == "/srv/repo"
    with pytest.raises(ConfigError, match=r"OPENCODE_DIRECTORY.*%XX"):
        Settings.from_env({"OPENCODE_DIRECTORY": "/srv/a%20b"})
