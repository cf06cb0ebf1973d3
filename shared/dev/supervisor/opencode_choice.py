"""Which OpenCode a dev drives: --opencode-url, an exported OPENCODE_URL that is really someone's, or its simulator.

An OPENCODE_URL in the environment is often just left over from another dev's `export` lines (its simulator),
which stops with that dev. So an exported one is used only when something answers there and it is not a running
dev's own simulator; otherwise this dev starts its own simulator and says why. --opencode-url is always used.
An exported OPENCODE_SERVERS (what `dev --servers 2+` exports) gets the same treatment: it goes to the pollers only
beside an OpenCode that is not this dev's simulator, when every server in it answers and none is a running dev's.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.dev.supervisor import envfile
from shared.dev.supervisor.probes import reachable
from shared.dev.supervisor.rundir import running_env_files


@dataclass(frozen=True, slots=True)
class OpenCodeChoice:
    url: str | None  # None: start the simulator
    note: str | None  # what to tell the user about it


def _simulator_urls(env: dict[str, str]) -> set[str]:
    servers = [item.partition("=")[2] for item in env.get("OPENCODE_SERVERS", "").split(",")]
    return {url.strip().rstrip("/") for url in [env.get("OPENCODE_URL", ""), *servers] if url.strip()}


def _simulator_of_a_running_dev(url: str) -> int | None:
    for path in running_env_files():
        try:
            found = envfile.parse(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if found.simulator and url.rstrip("/") in _simulator_urls(found.env):
            return found.pid or 0
    return None


def choose_opencode(url: str | None, *, from_environment: bool) -> OpenCodeChoice:
    if url is None:
        return OpenCodeChoice(None, None)
    if not from_environment:
        if reachable(url):
            return OpenCodeChoice(url, f"opencode   {url} (given by --opencode-url, not supervised)")
        return OpenCodeChoice(url, f"warning: nothing answers at {url} (--opencode-url) yet: the pollers will retry")
    use_anyway = f'pass --opencode-url "{url}" to use it anyway'
    pid = _simulator_of_a_running_dev(url)
    if pid is not None:
        return OpenCodeChoice(
            None,
            f"OPENCODE_URL={url} (exported) is the simulator of another dev (pid {pid}) and stops with it:"
            f" starting this dev's own simulator instead ({use_anyway})",
        )
    if not reachable(url):
        return OpenCodeChoice(
            None,
            f"OPENCODE_URL={url} (exported) does not answer: starting the simulator instead ({use_anyway})",
        )
    return OpenCodeChoice(
        url, f"opencode   {url} (OPENCODE_URL from the environment, not supervised; unset it to run the simulator)"
    )


def choose_servers(exported: str | None, *, simulated: bool) -> OpenCodeChoice:
    """The OPENCODE_SERVERS the pollers get from an exported one (url: the value, None: none), and why."""
    if not exported or not exported.strip():
        return OpenCodeChoice(None, None)
    if simulated:
        return OpenCodeChoice(None, "OPENCODE_SERVERS (exported) is ignored: this dev drives its own simulator")
    for item in exported.split(","):
        name, _, url = (part.strip() for part in item.partition("="))
        pid = _simulator_of_a_running_dev(url)
        if pid is not None:
            return OpenCodeChoice(
                None, f"OPENCODE_SERVERS (exported) is ignored: its {name} is the simulator of another dev (pid {pid})"
            )
        if not reachable(url):
            return OpenCodeChoice(None, f"OPENCODE_SERVERS (exported) is ignored: nothing answers at its {name}")
    names = ", ".join(item.partition("=")[0].strip() for item in exported.split(","))
    return OpenCodeChoice(exported.strip(), f"opencode   servers {names} (OPENCODE_SERVERS, not supervised)")
