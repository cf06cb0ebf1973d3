from __future__ import annotations

from poller.completion import outcome, run_finished, run_orphaned
from poller.mirror import current_tool_calls


def assistant(finish: str | None = "stop", completed: bool = True, error: dict | None = None, parts=()) -> dict:
    info: dict = {"id": "msg_2", "role": "assistant", "time": {"created": 1}}
    if completed:
        info["time"]["completed"] = 2
    if finish:
        info["finish"] = finish
    if error:
        info["error"] = error
    return {"info": info, "parts": list(parts)}


USER = {"info": {"id": "msg_1", "role": "user", "time": {"created": 1}}, "parts": []}


def test_finished_needs_idle_and_a_closing_assistant_message():
    assert run_finished([USER, assistant()], busy=False)
    assert not run_finished([USER, assistant()], busy=True)
    assert not run_finished([USER], busy=False)
    assert not run_finished([USER, assistant(completed=False, finish=None)], busy=False)
    assert not run_finished([USER, assistant(finish="tool-calls")], busy=False)
    assert not run_finished([], busy=False)


def test_error_or_abort_closes_the_run_without_finish():
    aborted = assistant(finish=None, error={"name": "MessageAbortedError", "data": {"message": "Aborted"}})
    assert run_finished([USER, aborted], busy=False)
    assert outcome([USER, aborted], cancel_requested=False) == ("cancelled", None)


def test_abort_during_retry_has_no_error_and_no_parts():
    # captured: the assistant message is completed with no error, no finish and no parts
    assert run_finished([USER, assistant(finish=None)], busy=False)


def test_outcome_maps_assistant_errors_to_their_message():
    error = {"name": "APIError", "data": {"message": "Bad Request: model rejected", "statusCode": 400}}
    assert outcome([USER, assistant(finish=None, error=error)], False) == ("error", "Bad Request: model rejected")
    assert outcome([USER, assistant(finish=None, error={"name": "UnknownError"})], False) == ("error", "UnknownError")
    assert outcome([USER, assistant()], cancel_requested=True) == ("cancelled", None)
    assert outcome([USER, assistant()], cancel_requested=False) == ("completed", None)


def test_a_running_tool_keeps_the_run_open():
    running = {"id": "prt_1", "messageID": "msg_2", "type": "tool", "state": {"status": "running"}}
    message = assistant(parts=[running])
    assert current_tool_calls([message]) == [running]
    assert not run_finished([USER, message], busy=False)


def test_a_run_lost_to_a_restart_is_orphaned_once_idle_past_the_grace_period():
    # measured: a restarted OpenCode leaves the run's assistant message open for good and the session idle
    running = {"id": "prt_1", "messageID": "msg_2", "type": "tool", "state": {"status": "running"}}
    for lost in (assistant(completed=False, finish=None), assistant(completed=False, finish=None, parts=[running])):
        assert run_orphaned([USER, lost], busy=False, idle_for_s=31, grace_s=30)
        assert not run_orphaned([USER, lost], busy=False, idle_for_s=30, grace_s=30)  # not past the grace yet
        assert not run_orphaned([USER, lost], busy=True, idle_for_s=31, grace_s=30)  # OpenCode still runs it
        assert not run_finished([USER, lost], busy=False)


def test_a_closed_run_or_a_transcript_without_answer_is_not_orphaned():
    assert not run_orphaned([USER, assistant()], busy=False, idle_for_s=99, grace_s=30)
    assert not run_orphaned([USER, assistant(finish="tool-calls")], busy=False, idle_for_s=99, grace_s=30)
    assert not run_orphaned([USER], busy=False, idle_for_s=99, grace_s=30)
    assert not run_orphaned([], busy=False, idle_for_s=99, grace_s=30)


def test_only_the_newest_assistant_message_counts():
    # measured: a follow-up after a restart is answered normally; the lost message above it stays open
    lost = assistant(completed=False, finish=None)
    follow_up = {"info": {"id": "msg_3", "role": "user", "time": {"created": 3}}, "parts": []}
    answer = {**assistant(), "info": {**assistant()["info"], "id": "msg_4"}}
    assert not run_orphaned([USER, lost, follow_up, answer], busy=False, idle_for_s=99, grace_s=30)
    assert run_orphaned([USER, lost, follow_up], busy=False, idle_for_s=99, grace_s=30)
