"""Typed shapes of the OpenCode 1.18 JSON this project reads and the simulator writes.

Keys marked `Required` are always present; the others appear only in some states (an open assistant message
has no `finish`, a part that still streams has no `time.end`). `Any` is used only where OpenCode's own JSON
is open-ended (tool input and metadata, error data).
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypedDict


class TokenCache(TypedDict):
    read: int
    write: int


class Tokens(TypedDict, total=False):
    total: int  # only once a step has finished
    input: Required[int]
    output: Required[int]
    reasoning: Required[int]
    cache: Required[TokenCache]


class SessionTime(TypedDict, total=False):
    created: Required[int]
    updated: Required[int]
    compacting: int
    archived: float


class SessionSummary(TypedDict, total=False):
    additions: Required[int]
    deletions: Required[int]
    files: Required[int]
    diffs: list[dict[str, Any]]


class SessionModel(TypedDict, total=False):
    id: Required[str]
    providerID: Required[str]
    variant: str


class Session(TypedDict, total=False):
    id: Required[str]  # ses_…, descending: the newest session sorts first
    slug: Required[str]
    projectID: Required[str]
    directory: Required[str]
    path: str
    parentID: str
    summary: SessionSummary
    cost: float
    tokens: Tokens
    title: Required[str]
    agent: str  # set by the first prompt
    model: SessionModel  # set by the first prompt
    version: Required[str]
    time: Required[SessionTime]


class ModelRef(TypedDict):
    providerID: str
    modelID: str


class UserTime(TypedDict):
    created: int


class UserSummary(TypedDict, total=False):
    diffs: Required[list[dict[str, Any]]]
    title: str
    body: str


class UserMessageInfo(TypedDict, total=False):
    id: Required[str]
    sessionID: Required[str]
    role: Required[Literal["user"]]
    time: Required[UserTime]
    summary: UserSummary  # added once the run answering it starts
    agent: Required[str]
    model: Required[ModelRef]
    system: str
    tools: dict[str, bool]


class AssistantTime(TypedDict, total=False):
    created: Required[int]
    completed: int  # per step; absent while the step is open


class AssistantPath(TypedDict):
    cwd: str
    root: str


class MessageError(TypedDict):
    name: str  # APIError, MessageAbortedError, ProviderAuthError, UnknownError, …
    data: dict[str, Any]


class AssistantMessageInfo(TypedDict, total=False):
    id: Required[str]
    sessionID: Required[str]
    role: Required[Literal["assistant"]]
    time: Required[AssistantTime]
    error: MessageError
    parentID: Required[str]  # the user message this step answers
    modelID: Required[str]
    providerID: Required[str]
    mode: Required[str]
    agent: Required[str]
    path: Required[AssistantPath]
    summary: bool
    cost: Required[float]
    tokens: Required[Tokens]
    finish: str  # "stop", "tool-calls", …; absent until the step ends


MessageInfo = UserMessageInfo | AssistantMessageInfo


class PartTime(TypedDict, total=False):
    start: Required[int]
    end: int
    compacted: int


class ToolState(TypedDict, total=False):
    status: Required[Literal["pending", "running", "completed", "error"]]
    input: Required[dict[str, Any]]
    raw: str  # pending
    title: str  # running (optional), completed
    metadata: dict[str, Any]  # running (optional), completed
    output: str  # completed
    error: str  # error
    time: PartTime  # running: start; completed/error: start, end
    attachments: list[dict[str, Any]]


class Part(TypedDict, total=False):
    """Any part; `type` says which of the optional keys it carries."""

    id: Required[str]  # prt_…, ascending
    sessionID: Required[str]
    messageID: Required[str]
    type: Required[str]  # text, reasoning, tool, step-start, step-finish, file, patch, …
    text: str  # text, reasoning
    synthetic: bool
    ignored: bool
    time: PartTime  # text, reasoning
    metadata: dict[str, Any]
    callID: str  # tool
    tool: str  # tool
    state: ToolState  # tool
    snapshot: str  # step-start, step-finish
    reason: str  # step-finish
    cost: float  # step-finish
    tokens: Tokens  # step-finish


class Message(TypedDict):
    info: MessageInfo
    parts: list[Part]


class SessionStatus(TypedDict, total=False):
    type: Required[Literal["idle", "busy", "retry"]]
    attempt: int  # retry
    message: str  # retry
    next: int  # retry: epoch ms of the next attempt
    action: dict[str, Any]


class Event(TypedDict):
    """One `data:` record of `GET /event`."""

    id: str  # evt_…, ascending
    type: str
    properties: dict[str, Any]
