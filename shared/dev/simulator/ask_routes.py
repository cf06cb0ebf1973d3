"""`GET /permission`, `GET /question` and their reply routes, answered as OpenCode 1.18.33 answers them."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.dev.simulator.errors import bad_request, simulation_of
from shared.dev.simulator.validation import compact, json_body
from shared.json_response import JSONResponse

PERMISSION_REPLIES = ("once", "always", "reject")


def _not_found(kind: str, request_id: str) -> JSONResponse:
    """Effect's tagged error body, as OpenCode 1.18.33 answers an unknown (or already answered) request."""
    name = "PermissionNotFoundError" if kind == "permission" else "QuestionNotFoundError"
    message = f"{kind.capitalize()} request not found: {request_id}"
    return JSONResponse({"_tag": name, "requestID": request_id, "message": message}, status_code=404)


async def list_permissions(request: Request) -> Response:
    return JSONResponse(simulation_of(request).asks.listed("permission"))


async def list_questions(request: Request) -> Response:
    return JSONResponse(simulation_of(request).asks.listed("question"))


def _permission_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or body.get("reply") not in PERMISSION_REPLIES:
        return f'Expected "once" | "always" | "reject", got {compact(body)}\n  at ["reply"]'
    if not isinstance(body.get("message", ""), str):
        return f'Expected string, got {compact(body["message"])}\n  at ["message"]'
    return None


def _answers_problem(body: Any) -> str | None:
    answers = body.get("answers") if isinstance(body, dict) else None
    if not isinstance(answers, list) or not all(
        isinstance(a, list) and all(isinstance(label, str) for label in a) for a in answers
    ):
        return f'Expected array of arrays of strings, got {compact(body)}\n  at ["answers"]'
    return None


async def reply_permission(request: Request) -> Response:
    request_id = request.path_params["request_id"]
    body, problem = await json_body(request)
    problem = problem or _permission_problem(body)
    if problem is not None:
        return bad_request(problem)
    answer = {"reply": body["reply"], **({"message": body["message"]} if body.get("message") else {})}
    if not simulation_of(request).asks.reply("permission", request_id, answer):
        return _not_found("permission", request_id)
    return JSONResponse(True)


async def reply_question(request: Request) -> Response:
    request_id = request.path_params["request_id"]
    body, problem = await json_body(request)
    problem = problem or _answers_problem(body)
    if problem is not None:
        return bad_request(problem)
    if not simulation_of(request).asks.reply("question", request_id, {"answers": body["answers"]}):
        return _not_found("question", request_id)
    return JSONResponse(True)


async def reject_question(request: Request) -> Response:
    request_id = request.path_params["request_id"]
    if not simulation_of(request).asks.reply("question", request_id, {}):
        return _not_found("question", request_id)
    return JSONResponse(True)


def permission_ruleset_problem(value: Any) -> str | None:
    """What OpenCode's schema refuses in POST /session's `permission`: a list of {permission, pattern, action}."""
    ok = isinstance(value, list) and all(
        isinstance(r, dict)
        and set(r) == {"permission", "pattern", "action"}
        and isinstance(r["permission"], str)
        and isinstance(r["pattern"], str)
        and r["action"] in ("allow", "deny", "ask")
        for r in value
    )
    return None if ok else f'Expected PermissionRuleset, got {compact(value)}\n  at ["permission"]'


ROUTES = [
    Route("/permission", list_permissions),
    Route("/permission/{request_id}/reply", reply_permission, methods=["POST"]),
    Route("/question", list_questions),
    Route("/question/{request_id}/reply", reply_question, methods=["POST"]),
    Route("/question/{request_id}/reject", reject_question, methods=["POST"]),
]
