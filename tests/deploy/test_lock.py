"""The lock is what runs: the test environment holds exactly uv.lock's set, and every installer uses the lock."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def locked(*selection: str) -> dict[str, str]:
    """name → version that uv.lock installs for `selection` on this interpreter and platform."""
    out = subprocess.run(
        ["bash", ".ci/uv", "export", "--frozen", "--no-hashes", "--no-header", "--no-annotate", "--no-emit-project",
         "--no-default-groups", *selection],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pins: dict[str, str] = {}
    for line in out.splitlines():
        requirement, _, marker = line.partition(";")
        if not requirement.strip() or requirement.startswith("#"):
            continue
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, version = requirement.strip().split("==")
        pins[canonicalize_name(name)] = version
    return pins


def installed() -> dict[str, str]:
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    found.pop("opencode-session-layer")  # the project itself, installed editable from the checkout
    return found


def test_the_test_environment_is_exactly_the_lock():
    """`.ci/run` installs with `.ci/install dev deploy`: nothing more, nothing less, nothing at another version."""
    assert sys.prefix != sys.base_prefix, "run inside the project's venv"
    assert installed() == locked("--extra", "dev", "--group", "deploy")


def test_every_installer_reads_the_lock():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_commands = re.findall(r"```sh\n(.+?)\n```", readme)[:2]
    assert first_commands[0].startswith("bash .ci/install && "), first_commands
    assert first_commands[1] == "bash .ci/run"
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "pip install" not in ci
    assert ".ci/install dev deploy" in ci
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "uv export --frozen" in dockerfile
    assert re.findall(r"pip install (?!--no-deps /wheels/\*\.whl)[^\n]*", dockerfile) == [
        "pip install --require-hashes --no-deps -r .ci/uv-requirements.txt",
        "pip install --require-hashes --no-deps -r /wheels/requirements.txt \\",
    ]


def test_uv_itself_is_pinned_by_hash_and_matches_pyproject():
    requirements = (ROOT / ".ci/uv-requirements.txt").read_text(encoding="utf-8")
    version = re.search(r"^uv==(\S+) \\$", requirements, re.MULTILINE)
    assert version, requirements[:200]
    assert requirements.count("--hash=sha256:") >= 10, "a hash for every platform's wheel"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'required-version = "=={version[1]}"' in pyproject


def test_an_install_that_cannot_fetch_uv_says_so(tmp_path):
    """Was: the pinned uv's own install failed silently, and the installer blamed uv.lock ('does not match
    pyproject.toml: run bash .ci/lock'), sending the user to the wrong fix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV"))}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "cache"), "VENV": str(tmp_path / "venv"), "PIP_CONFIG_FILE": os.devnull}
    env |= {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"}
    result = subprocess.run(["bash", ".ci/install"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "error: could not install the pinned uv (.ci/uv-requirements.txt): see above" in result.stderr
    assert "uv.lock does not match" not in result.stderr
    assert not (tmp_path / "venv").exists()
