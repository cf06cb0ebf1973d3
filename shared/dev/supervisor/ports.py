"""dev's ports: the ones its last run on the same --data-dir used when they are still free, else new ones; and
the servers' URLs as status lines show them."""

from __future__ import annotations

from urllib.parse import urlsplit

from shared.dev.processes import free_port
from shared.dev.supervisor.options import DevError
from shared.dev.supervisor.probes import port_free
from shared.dev.supervisor.reporter import Reporter

DEFAULT_GATEWAY_PORT = 8080


def gateway_port(requested: int | None, ports: dict[str, int], reporter: Reporter) -> int:
    """--port (0: any free one); else the last run's port on this data dir, else 8080, else a free one."""
    if requested is None:
        return keep_or_pick("gateway", ports, reporter, default=DEFAULT_GATEWAY_PORT)
    if requested == 0:
        port = free_port()
    elif not port_free(requested):
        raise DevError(f"port {requested} is already in use: choose another --port, or 0 for a free one")
    else:
        port = requested
    ports["gateway"] = port
    return port


def keep_or_pick(name: str, ports: dict[str, int], reporter: Reporter, *, default: int | None = None) -> int:
    """The port `name` had last time (when free), else `default` (when free), else any free one; remembered."""
    kept = ports.get(name)
    if kept is not None and port_free(kept):
        return kept
    port = default if default is not None and port_free(default) else free_port()
    if kept is not None:
        reporter.status(f"port {kept} ({name}, kept from the last run) is taken: using {port}, so its URL changed")
    elif default is not None and port != default:
        reporter.status(f"port {default} is in use: the {name} listens on {port} instead")
    ports[name] = port
    return port


def without_password(url: str) -> str:
    """A server's URL for a status line: its port shown, its password not (the export lines carry what is needed)."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return parts._replace(netloc=f"{user}{parts.hostname}:{parts.port}").geturl()
