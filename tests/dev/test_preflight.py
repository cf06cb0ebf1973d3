"""`dev` refuses what its children would refuse before it starts anything: exit 2 and one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dev_stack import PERSISTENT_CACHE, fresh_env, run_cli

SHORT_SECRET = {"GATEWAY_AUTH_SECRET": "short"}


@pytest.mark.parametrize(
    ("args", "extra_env", "named"),
    [
        (["--opencode-url", "http://[::1"], {}, "error: --opencode-url 'http://[::1' is invalid: "),
        (["--opencode-url", "http://127.0.0.1:99999"], {}, "error: --opencode-url 'http://127.0.0.1:99999' is invalid"),
        (["--opencode-url", "http://127.0.0.1:0"], {}, "error: --opencode-url 'http://127.0.0.1:0' is invalid"),
        ([], {"OPENCODE_URL": "http://127.0.0.1:0"}, "error: OPENCODE_URL='http://127.0.0.1:0' is invalid"),
        ([], SHORT_SECRET, "error: GATEWAY_AUTH_SECRET is 5 bytes: it must be at least 32"),
        (["--data-dir", "/dev/null/x"], {}, "error: --data-dir /dev/null/x cannot hold dev's data: Not a directory"),
        (["--data-dir", "/proc/xx"], {}, "error: --data-dir /proc/xx cannot hold dev's data: "),
    ],
)
def test_a_bad_option_or_variable_is_exit_2_before_anything_starts(
    tmp_path: Path, args: list[str], extra_env: dict[str, str], named: str
) -> None:
    code, out, err = run_cli("dev", "--port", "0", *args, env={**fresh_env(tmp_path), **extra_env})
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and err.startswith(named), err
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(PERSISTENT_CACHE)] == []  # nothing started
