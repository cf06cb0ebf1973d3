"""Schemathesis against the gateway's own /openapi.json: no 5xx, and every answer as the document says.

The gateway runs for real (its own process, Redis, PostgreSQL, auth on) with a few archived sessions;
schemathesis drives it with valid and invalid parameters, as an attacker would.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from shared import commands
from shared.tokens import Scope, mint_token
from tests.helpers import Child, free_port, wait_for, wait_port

pytestmark = pytest.mark.anyio


def _import_eagerly() -> None:
    """schemathesis imports most of itself on first use; pytest rewrites its modules (a plugin) with ast.parse,
    which on CPython 3.11.7 fails when another thread (the simulator's) parses at once. Import it all now,
    while collection runs alone; optional extras that are not installed (allure) are skipped."""
    for module in pkgutil.walk_packages(schemathesis.__path__, "schemathesis."):
        with contextlib.suppress(ImportError):
            importlib.import_module(module.name)


_import_eagerly()
SECRET = "fuzz-secret-of-enough-length"
MAX_EXAMPLES = 300  # per generation mode, over every operation: well under a minute


async def test_the_gateway_answers_every_generated_request_as_documented(
    make_worker, redis, db, opencode, redis_url, schema
):
    await make_worker()
    for n, ticket in enumerate(("T-1", "T-1", "T-2")):
        sid = (await commands.enqueue(redis, db, opencode, session_type="chat", ticket_id=ticket, prompt=f"ECHO {n}"))[
            "sessionId"
        ]

        async def archived(sid=sid):
            cur = await db.execute("SELECT status FROM opencode_sessions WHERE id = %s", (sid,))
            row = await cur.fetchone()
            return row and row[0] == "completed"

        await wait_for(archived, timeout=30)
    port = free_port()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": schema, "GATEWAY_PORT": str(port), "GATEWAY_AUTH_SECRET": SECRET}
    gateway = Child("gateway-fuzz", "gateway", [], env)
    try:
        wait_port(port, child=gateway)
        _fuzz(f"http://127.0.0.1:{port}", mint_token(SECRET, Scope("admin"), 600))
        assert gateway.alive()
        assert "Traceback" not in gateway.output()
    finally:
        gateway.close()


def _fuzz(url: str, token: str) -> None:
    # Unknown query parameters are ignored, as browsers and proxies add their own (`?token=`, cache busters);
    # the streams never end by themselves, so they are tested in test_stream.py.
    config = SchemathesisConfig.from_dict({"generation": {"allow-extra-parameters": False}})
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config).exclude(path_regex="/stream$")
    strategy = schema.as_strategy(GenerationMode.POSITIVE) | schema.as_strategy(GenerationMode.NEGATIVE)

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=2 * MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            excluded_checks=[positive_data_acceptance],  # `before` is opaque: only our own cursors are valid
        )

    check()
