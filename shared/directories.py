"""A session's directory as OpenCode takes it (`?directory=`): the rules `--directory`, the API, another backend's
job and OPENCODE_DIRECTORY share. No import beyond the standard library: Settings reads OPENCODE_DIRECTORY with it."""

from __future__ import annotations

import posixpath
import re

MAX_DIRECTORY_BYTES = 4096  # Linux's PATH_MAX: no longer path names a directory
# OpenCode percent-decodes `?directory=` once more after its router has (`decodeURIComponent`): such a name is read
# as another directory there
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def check_directory(where: str) -> str:
    """`where` in its one spelling; ValueError saying what is wrong with an empty or relative one, one longer than a
    path can be (OpenCode refused it only after the work had begun), or one OpenCode would read as another."""
    if not where.strip() or not posixpath.isabs(where) or "\x00" in where:
        raise ValueError(f"{where!r} is not an absolute path")
    if len(where.encode()) > MAX_DIRECTORY_BYTES:
        raise ValueError(f"is longer than {MAX_DIRECTORY_BYTES} bytes")
    if _ESCAPE.search(where):
        raise ValueError(f"{where!r} holds a %XX sequence, which OpenCode decodes into another directory")
    return canonical_directory(where)


def canonical_directory(where: str) -> str:
    """The one spelling of an absolute directory, as OpenCode resolves it (`path.resolve`: no `.` or `..` segment,
    no repeated or trailing `/`). Was: `/srv/repo/` and `/srv/repo` were two places (two clients, two `/event`
    streams to one OpenCode instance) and a `directory=` filter found only the sessions spelled as it was."""
    if not posixpath.isabs(where):
        return where  # another backend's job: not ours to guess against which directory OpenCode resolves it
    return "/" + posixpath.normpath(where).lstrip("/")
