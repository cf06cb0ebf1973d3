from __future__ import annotations

from poller.completion import current_tool_calls, outcome, run_finished


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
