"""A terminal that exported an earlier dev's lines: what `dev` decides is never taken from it.

The trigger: `eval "$(opencode-sessions dev --env)"` against a `dev --servers 2`, that dev stopped, then a plain
`dev` started in the same terminal: its pollers must drive its own simulator, not the two that are gone, and its
`--env` lines must clear the earlier OPENCODE_SERVERS.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from shared.dev.supervisor import envfile
from shared.dev.supervisor.child import Child
from shared.dev.supervisor.options import DevOptions
from shared.dev.supervisor.reporter import Reporter
from shared.dev.supervisor.stack import DevStack

STALE = {
    "OPENCODE_SERVERS": "default=http://127.0.0.1:9,sim2=http://127.0.0.1:10",
    "OPENCODE_URL": "http://127.0.0.1:9",
    "REDIS_URL": "redis://127.0.0.1:11/0",
    "DATABASE_URL": "postgresql://x@127.0.0.1:12/opencode",
    "GATEWAY_URL": "http://127.0.0.1:13",
    "GATEWAY_PORT": "13",
    "POLLER_ID": "someone-else",
}


def _stack(stderr: io.StringIO) -> DevStack:
    """A stack whose stores are stand-ins (their URLs are all `_start_children` reads) and whose children never run."""
    stack = DevStack(DevOptions(replicas=1), Reporter(False, io.StringIO(), stderr))
    stack.redis = SimpleNamespace(url="redis://127.0.0.1:21/0", user_url=lambda user, pw: "redis://u@127.0.0.1:21/0")  # type: ignore[assignment]
    stack.postgres = SimpleNamespace(
        url="postgresql://p@127.0.0.1:22/o", role_url=lambda role, pw: "postgresql://g@x/o"
    )  # type: ignore[assignment]
    stack.gateway_port = 23
    return stack


def test_a_new_dev_hands_its_children_nothing_an_earlier_dev_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in STALE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(Child, "start", lambda self: None)
    stderr = io.StringIO()
    stack = _stack(stderr)
    stack._start_children()

    assert stack.simulated  # the exported OPENCODE_URL answers nowhere: its own simulator
    for child in stack.children:
        assert "OPENCODE_SERVERS" not in child.env, child.name
        assert child.env["OPENCODE_URL"] == stack.opencode_url != STALE["OPENCODE_URL"]
        assert child.env["REDIS_URL"] != STALE["REDIS_URL"] and child.env["DATABASE_URL"] != STALE["DATABASE_URL"]
        assert child.env.get("POLLER_ID") != "someone-else" and "GATEWAY_URL" not in child.env
    poller = next(child for child in stack.children if child.name == "poller-1")
    assert "GATEWAY_PORT" not in poller.env
    assert "OPENCODE_SERVERS (exported) is ignored: this dev drives its own simulator" in stderr.getvalue()
    assert "OPENCODE_SERVERS" not in stack.environment()


def test_the_env_lines_clear_what_an_earlier_dev_exported_and_this_one_does_not() -> None:
    env = {"GATEWAY_URL": "http://127.0.0.1:1", "OPENCODE_URL": "http://127.0.0.1:2"}
    text = envfile.render(env, pid=1, simulator=True)
    assert text.splitlines()[-1] == "unset REDIS_URL DATABASE_URL GATEWAY_AUTH_SECRET OPENCODE_SERVERS"
    assert envfile.parse(text).env == env
    both = envfile.render({**env, "OPENCODE_SERVERS": "default=http://127.0.0.1:2"}, pid=1, simulator=True)
    assert "unset OPENCODE_SERVERS" not in both and "OPENCODE_SERVERS" not in both.splitlines()[-1]
