"""Times PostgreSQL holds and Python cannot (`infinity`, a year past 9999, a date BC), read as the nearest Python
can: rows come from other backends too, and one such row made every list and read that held it fail (a 500)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg.abc import Buffer
from psycopg.errors import DataError
from psycopg.types.datetime import TimestampLoader


class _NearestTimestamp(TimestampLoader):
    def load(self, data: Buffer) -> datetime:
        try:
            return super().load(data)
        except DataError:
            text = bytes(data)
            return datetime.min if text.startswith(b"-") or text.endswith(b" BC") else datetime.max


def read_any_time(cursor: Any) -> None:
    """Read this cursor's `timestamp` columns as the nearest time Python holds (see the module)."""
    cursor.adapters.register_loader("timestamp", _NearestTimestamp)
