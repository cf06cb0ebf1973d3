"""What a session starts with besides its prompt: the agent, the model and the permission rules, parsed from
the forms the CLI and the Python API take (`--permission bash=ask`, `--model fake/fake-model`).

The rules become OpenCode's session `permission` ruleset (`[{permission, pattern, action}]`), sent on
`POST /session`; OpenCode applies the last rule that matches a tool call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared.errors import InvalidInput
from shared.ids import parse_text

ACTIONS = ("allow", "ask", "deny")
MAX_NAME_CHARS = 200


def _visible(name: str) -> bool:
    """No space and nothing a terminal acts on: an agent or model name is shown by `show` and the pages. Was: ESC
    and other control characters were taken (only whitespace was refused)."""
    return all(c.isprintable() and not c.isspace() for c in name)


def parse_agent(value: object) -> str:
    name = parse_text(value, "the agent")
    if not name.strip() or len(name) > MAX_NAME_CHARS or not _visible(name):
        raise InvalidInput(f"invalid agent {name!r}: expected a name without spaces or control characters")
    return name


def parse_model(value: object) -> dict[str, str]:
    """`PROVIDER/MODEL` (the model id may itself hold slashes) -> OpenCode's `{providerID, id}`."""
    value = parse_text(value, "the model")
    provider, _, model = value.partition("/")
    if not provider.strip() or not model.strip() or len(value) > MAX_NAME_CHARS or not _visible(value):
        raise InvalidInput(f"invalid model {value!r}: expected PROVIDER/MODEL, e.g. anthropic/claude-sonnet-4")
    return {"providerID": provider, "id": model}


def parse_permission_rule(value: object) -> dict[str, str]:
    """`PERMISSION[:PATTERN]=allow|ask|deny` (pattern `*` when absent), or the rule object itself."""
    if isinstance(value, Mapping):
        permission, pattern, action = value.get("permission"), value.get("pattern", "*"), value.get("action")
        shown = repr(dict(value))
    else:
        if not isinstance(value, str):
            raise InvalidInput(f"invalid permission rule {value!r}: expected PERMISSION[:PATTERN]=allow|ask|deny")
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
    parse_text(f"{permission}:{pattern}", f"permission rule {shown}")  # OpenCode's JSON as any other text
    return {"permission": permission, "pattern": pattern, "action": str(action)}


def parse_permissions(values: object) -> list[dict[str, str]]:
    """A list (or any iterable) of rules, None for none (as every optional argument of enqueue takes it): one
    string or rule object alone is refused, not read as its characters or keys."""
    if values is None:
        return []
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise InvalidInput(f"permission must be a list of rules, not {type(values).__name__}")
    return [parse_permission_rule(v) for v in values]
