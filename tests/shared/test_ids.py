from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.ids import new_message_id, parse_message_id, parse_session_id, parse_ticket_id


def test_session_ids_take_opencodes_form_only():
    assert parse_session_id("ses_df38a9b6bffeYGkPTOPM9Wp9iI") == "ses_df38a9b6bffeYGkPTOPM9Wp9iI"
    for bad in ("", "ses_", "msg_20c7564a1001kHv8FosQ3iAYVa", "ses_abc:def0123456789012345", "ses_*" * 7, None, 42):
        with pytest.raises(InvalidInput):
            parse_session_id(bad)


def test_ticket_ids_reject_key_breaking_characters():
    assert parse_ticket_id("TICKET-42.a_b") == "TICKET-42.a_b"
    for bad in ("", "a:b", "a b", "x" * 129, "a*", "a\nb"):
        with pytest.raises(InvalidInput):
            parse_ticket_id(bad)


@pytest.mark.parametrize("dots", [".", "..", "..."])
def test_ticket_ids_of_dots_alone_are_refused(dots: str) -> None:
    """Was: taken, though a URL naming them (`/tickets/../sessions`) is rewritten before it reaches the gateway."""
    with pytest.raises(InvalidInput, match="dots alone"):
        parse_ticket_id(dots)
    assert parse_ticket_id(f"{dots}a") == f"{dots}a"


def test_new_message_ids_ascend_and_parse():
    ids = [new_message_id() for _ in range(200)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 200
    assert all(parse_message_id(i) == i for i in ids)
    assert len(ids[0]) == len("msg_20c7564a1001kHv8FosQ3iAYVa")
