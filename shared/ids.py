"""Validated identifiers: nothing reaches a Redis key name or SQL query before passing through here."""

from __future__ import annotations

import os
import re
import threading
from typing import NewType

from shared.clock import now_ms
from shared.errors import InvalidInput

SessionId = NewType("SessionId", str)
TicketId = NewType("TicketId", str)
MessageId = NewType("MessageId", str)

# OpenCode ids are `<prefix>_` + 12 hex digits of time + 14 base62 characters (26 after the prefix);
# we allow a little slack in length so a future format change is not a hard failure.
_SESSION_RE = re.compile(r"ses_[0-9A-Za-z]{20,40}")
_MESSAGE_RE = re.compile(r"msg_[0-9A-Za-z]{20,40}")
# Ticket ids come from the host app: a conservative key-safe set (no ':' or whitespace, which would
# change the shape of a Redis key, and no '*?[]', which would be glob patterns).
_TICKET_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
# A UTF-16 surrogate on its own (half an emoji cut in two) has no UTF-8 form: Redis's scripts (cjson), PostgreSQL's
# text and an HTTP query refuse it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_id_lock = threading.Lock()
_last_ms = 0
_counter = 0


def parse_session_id(value: object) -> SessionId:
    """Return the id if it has OpenCode's `ses_…` form, else raise InvalidInput."""
    if not isinstance(value, str) or not _SESSION_RE.fullmatch(value):
        raise InvalidInput(f"invalid session id {_shown(value)}: expected OpenCode's ses_… form")
    return SessionId(value)


def parse_ticket_id(value: object) -> TicketId:
    """Return the id if it is 1-128 characters of [A-Za-z0-9_.-], not dots alone, else raise InvalidInput.

    Was: `.` and `..` were taken, and a URL naming them (`/tickets/../sessions`) is rewritten by browsers, proxies
    and the JS client's URL handling before it reaches the gateway: such a ticket could not be viewed."""
    if not isinstance(value, str) or not _TICKET_RE.fullmatch(value):
        raise InvalidInput(f"invalid ticket id {_shown(value)}: expected 1-128 characters of A-Z a-z 0-9 _ . -")
    if not value.strip("."):
        raise InvalidInput(f"invalid ticket id {_shown(value)}: dots alone name no ticket in a URL")
    return TicketId(value)


def parse_message_id(value: object) -> MessageId:
    """Return the id if it has OpenCode's `msg_…` form, else raise InvalidInput."""
    if not isinstance(value, str) or not _MESSAGE_RE.fullmatch(value):
        raise InvalidInput(f"invalid message id {_shown(value)}: expected OpenCode's msg_… form")
    return MessageId(value)


def parse_text(value: object, what: str, detail: object | None = None) -> str:
    """A string argument stored or sent as it is (a job field, a text column, a query parameter): InvalidInput
    naming `what` for another type (bytes too: their repr would be stored) or a lone UTF-16 surrogate, which
    was refused only after the session had been made in OpenCode and recorded in PostgreSQL."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}", detail)
    found = LONE_SURROGATE.search(value)
    if found is not None:
        raise InvalidInput(
            f"{what} holds a lone UTF-16 surrogate (U+{ord(found.group()):04X} at position {found.start()}),"
            " half of a character, which cannot be stored",
            detail,
        )
    return value


def new_message_id() -> MessageId:
    """A fresh `msg_…` id in OpenCode's ascending form, so it sorts after every earlier message.

    OpenCode orders a session's messages by id, and takes a client-chosen `messageID` as is: our
    prompt ids must therefore be built exactly like its own (48 bits of ms*4096+counter, then base62).
    """
    global _last_ms, _counter
    with _id_lock:
        now = now_ms()
        if now != _last_ms:
            _last_ms, _counter = now, 0
        _counter += 1
        value = (now * 0x1000 + _counter) & 0xFFFFFFFFFFFF
    suffix = "".join(_BASE62[b % 62] for b in os.urandom(14))
    return MessageId(f"msg_{value:012x}{suffix}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
