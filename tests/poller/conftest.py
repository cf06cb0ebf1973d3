"""The poller tests' own fixtures: an OpenCode that misbehaves around requests (tests/poller/hostile_asks.py)."""

from tests.poller.hostile_asks import client, hostile  # noqa: F401 - fixtures, found by pytest here
