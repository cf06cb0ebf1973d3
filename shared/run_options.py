"""What a session starts with besides its prompt: the agent, the model and the permission rules, parsed from
the forms the CLI and the Python API take (`--permission bash=ask`, `--model fake/fake-model`).

The rules become OpenCode's session `permission` ruleset (`[{permission, pattern, action}]`), sent on
`POST /session`; OpenCode applies the last rule that matches a tool call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.errors import InvalidInput

ACTIONS = ("allow", "ask", "deny")
MAX_NAME_CHARS = 200


def parse_agent(value: str) -> str:
    if not value.strip() or len(value) > MAX_NAME_CHARS or any(c.isspace() for c in value):
        raise InvalidInput(f"invalid agent {value!r}: expected a name without spaces")
    return value


def parse_model(value: str) -> dict[str, str]:
    """`PROVIDER/MODEL` (the model id may itself hold slashes) -> OpenCode's `{providerID, id}`."""
    provider, _, model = value.partition("/")
    if not provider.strip() or not model.strip() or len(value) > MAX_NAME_CHARS:
        raise InvalidInput(f"invalid model {value!r}: expected PROVIDER/MODEL, e.g. anthropic/claude-sonnet-4")
    return {"providerID": provider, "id": model}


def parse_permission_rule(value: str | Mapping[str, Any]) -> dict[str, str]:
    """`PERMISSION[:PATTERN]=allow|ask|deny` (pattern `*` when absent), or the rule object itself."""
    if isinstance(value, Mapping):
        permission, pattern, action = value.get("permission"), value.get("pattern", "*"), value.get("action")
        shown = repr(dict(value))
    else:
        target, sep, action = value.rpartition("=")
        permission, _, pattern = target.partition(":")
        pattern = pattern if ":" in target else "*"
        shown = repr(value)
        if not sep:
            action = None
    if not isinstance(permission, str) or not permission.strip() or any(c.isspace() for c in permission):
        raise InvalidInput(f"invalid permission rule {shown}: expected PERMISSION[:PATTERN]=allow|ask|deny")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidInput(f"invalid permission rule {shown}: the pattern after ':' is empty")
    if action not in ACTIONS:
        raise InvalidInput(f"invalid permission rule {shown}: the action must be one of {', '.join(ACTIONS)}")
    return {"permission": permission, "pattern": pattern, "action": str(action)}


def parse_permissions(values: Iterable[str | Mapping[str, Any]]) -> list[dict[str, str]]:
    return [parse_permission_rule(v) for v in values]
