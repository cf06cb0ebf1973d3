"""OpenCode's values in every odd shape: a transcript and the requests a run waits on, each with one value below
the ids replaced by JSON of another type. OpenCode's schema says what each field holds; another version, a plugin
or a proxy may send something else, and every reader of ours (the poller, the CLI, the pages) must take it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from shared.opencode.shapes import PART_IDS  # what the client checks before the poller sees a list

ODD_VALUES: list[Any] = [None, "", "x", 0, 7.5, True, [], ["x"], {}, {"x": 1}]


def transcript() -> list[dict[str, Any]]:
    """A run in progress: a prompt, then an answer that thinks, runs a tool, writes text, and every other part."""
    user = {"id": "msg_1", "sessionID": "ses_x", "role": "user", "time": {"created": 1}}
    answer = {
        "id": "msg_2",
        "sessionID": "ses_x",
        "role": "assistant",
        "parentID": "msg_1",
        "agent": "build",
        "modelID": "fake-model",
        "time": {"created": 2, "completed": 9},
        "finish": "stop",
        "error": {"name": "APIError", "data": {"message": "boom"}},
        "cost": 0.5,
        "tokens": {"input": 1, "output": 2, "reasoning": 0, "cache": {"read": 0, "write": 0}},
    }
    tool_state = {
        "status": "running",
        "input": {"command": "ls"},
        "title": "ls",
        "output": "a",
        "metadata": {"output": "a"},
        "error": "e",
        "time": {"start": 5, "end": 6},
    }
    part = {"messageID": "msg_2", "sessionID": "ses_x"}
    return [
        {"info": user, "parts": [{"id": "prt_1", **part, "messageID": "msg_1", "type": "text", "text": "hi"}]},
        {
            "info": answer,
            "parts": [
                {"id": "prt_2", **part, "type": "reasoning", "text": "hm", "time": {"start": 3}},
                {"id": "prt_3", **part, "type": "tool", "tool": "bash", "state": tool_state},
                {"id": "prt_4", **part, "type": "text", "text": "so", "time": {"start": 4}},
                {"id": "prt_5", **part, "type": "file", "filename": "f.txt", "url": "file:///f", "mime": "text/plain"},
                {"id": "prt_6", **part, "type": "agent", "name": "plan"},
                {"id": "prt_7", **part, "type": "subtask", "description": "d", "prompt": "p"},
                {"id": "prt_8", **part, "type": "patch", "files": ["a.py"]},
                {"id": "prt_9", **part, "type": "retry", "attempt": 1, "error": {"name": "E", "data": {"message": ""}}},
            ],
        },
    ]


# What a run waits on, as the live state's `pending` holds it (well formed): a permission request and a question.
PERMISSION = {
    "kind": "permission",
    "id": "per_1",
    "askedAt": 1,
    "tool": {"messageID": "msg_2", "callID": "call_1"},
    "permission": "bash",
    "patterns": ["echo hello"],
    "metadata": {"command": "echo hello"},
    "always": ["echo *"],
}
QUESTION = {
    "kind": "question",
    "id": "que_1",
    "askedAt": 2,
    "tool": None,
    "questions": [
        {
            "question": "Which color?",
            "header": "Color",
            "options": [{"label": "Red", "description": "warm"}, {"label": "Blue"}],
        },
        {"question": "Which sizes?", "header": "Size", "options": [{"label": "S"}, {"label": "L"}], "multiple": True},
    ],
}


def requests() -> list[dict[str, Any]]:
    """PERMISSION and QUESTION, each a copy of its own."""
    return copy.deepcopy([PERMISSION, QUESTION])


def value_at(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def replaced(value: Any, path: tuple[Any, ...], odd: Any) -> Any:
    """`value` (rebuilt by its maker) with the one at `path` replaced."""
    holder = value_at(value, path[:-1])
    holder[path[-1]] = odd
    return value


def _places(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield (*path, key)
        yield from _places(inner, (*path, key))


def transcript_places() -> list[tuple[Any, ...]]:
    """Every place below a message's info or part but the ids the client checks: `(message, "info", key…)` or
    `(message, "parts", part, key…)`."""
    out = []
    for here in _places(transcript()):
        depth = 3 if here[1:2] == ("info",) else 4  # the first level inside an info, or inside a part
        if len(here) > depth or (len(here) == depth and here[-1] not in PART_IDS):  # (an info's id is one too)
            out.append(here)
    return out


def request_places() -> list[tuple[Any, ...]]:
    """Every place inside a pending request but its kind and id (the poller writes those)."""
    return [here for here in _places(requests()) if len(here) > 2 or (len(here) == 2 and here[1] not in ("kind", "id"))]


def odd_transcripts() -> list[tuple[str, tuple[Any, ...], Any, list[dict[str, Any]]]]:
    """(name, place, odd value, the transcript with it) for every place and odd value."""
    return [
        (_name(place, odd), place, odd, replaced(transcript(), place, odd))
        for place in transcript_places()
        for odd in ODD_VALUES
    ]


def odd_requests() -> list[tuple[str, dict[str, Any]]]:
    cases = [(place, odd) for place in request_places() for odd in ODD_VALUES]
    return [(_name(place, odd), replaced(requests(), place, odd)[place[0]]) for place, odd in cases]


def _name(place: tuple[Any, ...], odd: Any) -> str:
    return f"{'.'.join(map(str, place))}={odd!r}"
