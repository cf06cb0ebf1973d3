"""Editing what a session stores, as OpenCode 1.18.33 answers it: `PATCH` and `DELETE` of a part, `DELETE` of a
message. Each publishes its event (`message.part.updated`, `message.part.removed`, `message.removed`), for an id
that was never stored too; only deleting a message is refused while the session is busy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.dev.simulator.errors import bad_request, session_or_error, simulation_of
from shared.dev.simulator.validation import compact, json_body
from shared.json_response import JSONResponse

_SAYS = ("id", "sessionID", "messageID", "type")  # what a Part must carry, as strings


async def update_part(request: Request) -> Response:
    """Stores the part as given (added when new, in id order); a part of a message not stored is taken and not
    listed. A body whose ids differ from the path's is a BadRequest without a message."""
    sess = session_or_error(request)
    if isinstance(sess, JSONResponse):
        return sess
    body, problem = await json_body(request)
    if problem is None and not (isinstance(body, dict) and all(isinstance(body.get(k), str) for k in _SAYS)):
        problem = f"Expected Part, got {compact(body)}"
    if problem is not None:
        return bad_request(problem)
    path = request.path_params
    if (body["id"], body["messageID"], body["sessionID"]) != (path["part_id"], path["message_id"], sess.id):
        return JSONResponse({"_tag": "BadRequest"}, status_code=400)
    message = sess.messages.get(body["messageID"])
    if message is not None:
        message.parts[:] = sorted([*(p for p in message.parts if p["id"] != body["id"]), body], key=lambda p: p["id"])
    simulation_of(request).part_updated(sess, body)
    return JSONResponse(body)


async def delete_part(request: Request) -> Response:
    sess = session_or_error(request)
    if isinstance(sess, JSONResponse):
        return sess
    message_id, part_id = request.path_params["message_id"], request.path_params["part_id"]
    message = sess.messages.get(message_id)
    if message is not None:
        message.parts[:] = [p for p in message.parts if p["id"] != part_id]
    props = {"sessionID": sess.id, "messageID": message_id, "partID": part_id}
    simulation_of(request).bus.publish("message.part.removed", props)
    return JSONResponse(True)


async def delete_message(request: Request) -> Response:
    sess = session_or_error(request)
    if isinstance(sess, JSONResponse):
        return sess
    if sess.status is not None:
        body = {"_tag": "SessionBusyError", "sessionID": sess.id, "message": f"Session is busy: {sess.id}"}
        return JSONResponse(body, status_code=409)
    message_id = request.path_params["message_id"]
    if sess.messages.pop(message_id, None) is not None:
        sess.order.remove(message_id)
    simulation_of(request).bus.publish("message.removed", {"sessionID": sess.id, "messageID": message_id})
    return JSONResponse(True)


MESSAGE = "/session/{session_id}/message/{message_id}"
ROUTES = [
    Route(MESSAGE, delete_message, methods=["DELETE"]),
    Route(MESSAGE + "/part/{part_id}", update_part, methods=["PATCH"]),
    Route(MESSAGE + "/part/{part_id}", delete_part, methods=["DELETE"]),
]
