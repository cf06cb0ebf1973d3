"""`python -m tests.gateway.schema_fuzz URL TOKEN`: schemathesis against URL/openapi.json; exit 1 on a failure.

Its own process, not pytest's: there, schemathesis' lazy imports and Hypothesis' lambda descriptions call
ast.parse, which on CPython 3.11.7 fails when another thread of the test process parses at once.
"""

from __future__ import annotations

import sys

import hypothesis
import schemathesis
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

MAX_EXAMPLES = 300  # per generation mode, over every operation: well under a minute


def fuzz(url: str, token: str) -> None:
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


if __name__ == "__main__":
    fuzz(sys.argv[1], sys.argv[2])
