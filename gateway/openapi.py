"""GET /openapi.json: the gateway's API, described by hand (the routes are few and the SSE part is prose)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid id or query",
        401: "no valid token",
        403: "token of another scope (to a ticket token, also a session that does not exist)",
        404: "not found",
        429: "the token holds GATEWAY_MAX_STREAMS_PER_TOKEN open streams already",
        503: "Redis or PostgreSQL unreachable",
    }
    return {str(code): _json(ERROR, text[code]) for code in codes}


# The same rules as shared/ids.py and gateway/endpoints.py: a value outside them is a 400 naming the parameter.
SESSION_ID_SCHEMA = {"type": "string", "pattern": "^ses_[0-9A-Za-z]{20,40}$"}
TICKET_ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"}
SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": SESSION_ID_SCHEMA}
TICKET_ID = {"name": "ticket_id", "in": "path", "required": True, "schema": TICKET_ID_SCHEMA}
LIMIT = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}}
BEFORE = {
    "name": "before",
    "in": "query",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,200}$"},
    "description": "nextCursor of a page (opaque: any other value is a 400)",
}
SERVER = {
    "name": "server",
    "in": "query",
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$"},
    "description": "only sessions on this OpenCode server (OPENCODE_SERVERS name; `default` without it)",
}
DIRECTORY = {
    "name": "directory",
    "in": "query",
    "schema": {"type": "string", "pattern": "^/"},
    "description": "only sessions run in this (absolute) directory",
}
TYPE = {
    "name": "type",
    "in": "query",
    "schema": {"enum": ["ask", "chat", "admin"]},
    "description": "only sessions of this type (any other value is a 400)",
}
MESSAGES = {"name": "messages", "in": "query", "schema": {"type": "boolean"}, "description": "include messages"}
SSE = {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "OpenCode Session Layer gateway",
        "version": "0.1.0",
        "description": "Read-only API and Server-Sent Events over live (Redis) and archived (PostgreSQL) "
        "OpenCode sessions. Auth: `Authorization: Bearer <token>` or `?token=` (see `opencode-sessions token`).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "detail": {}},
            },
            "Session": {
                "type": "object",
                "required": ["sessionId", "sessionType", "status", "seq", "live"],
                "properties": {
                    "sessionId": {"type": "string"},
                    "ticketId": {"type": ["string", "null"]},
                    "sessionType": {"enum": ["ask", "chat", "admin"]},
                    "status": {"enum": ["pending", "running", "completed", "error", "cancelled", "waiting"]},
                    "title": {"type": ["string", "null"]},
                    "messages": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "OpenCode's {info, parts}",
                    },
                    "currentToolCalls": {"type": "array", "items": {"type": "object"}},
                    "error": {"type": ["string", "null"]},
                    "startedAt": {"type": "integer"},
                    "updatedAt": {"type": "integer"},
                    "metadata": {},
                    "seq": {"type": "integer"},
                    "live": {"type": "boolean"},
                    "pending": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "requests waiting for a person: {kind, id, askedAt, tool, ...}",
                    },
                    "usage": {"$ref": "#/components/schemas/Usage"},
                    "server": {"type": "string"},
                    "directory": {"type": ["string", "null"]},
                },
            },
            "Usage": {
                "type": "object",
                "description": "summed over the session's assistant messages (one per model step)",
                "properties": {
                    "tokens": {
                        "type": "object",
                        "properties": {
                            "input": {"type": "integer"},
                            "output": {"type": "integer"},
                            "reasoning": {"type": "integer"},
                            "cache": {
                                "type": "object",
                                "properties": {"read": {"type": "integer"}, "write": {"type": "integer"}},
                            },
                        },
                    },
                    "cost": {"type": "number"},
                    "steps": {"type": "integer"},
                },
            },
            "TicketUsage": {
                "type": "object",
                "properties": {
                    "ticketId": {"type": "string"},
                    "total": {"$ref": "#/components/schemas/Usage"},
                    "sessions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "sessionId": {"type": "string"},
                                "sessionType": {"type": "string"},
                                "status": {"type": "string"},
                                "startedAt": {"type": ["integer", "null"]},
                                "live": {"type": "boolean"},
                                "usage": {"$ref": "#/components/schemas/Usage"},
                            },
                        },
                    },
                },
            },
            "Page": {
                "type": "object",
                "properties": {
                    "sessions": {"type": "array", "items": {"$ref": "#/components/schemas/Session"}},
                    "nextCursor": {"type": ["string", "null"]},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/sessions/{session_id}": {
            "get": {
                "summary": "A session: live state if live, else the archived row",
                "parameters": [SESSION_ID],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}, "the session"),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/sessions/{session_id}/stream": {
            "get": {
                "summary": "SSE: `snapshot`, then `update` per change (id = seq), then `complete`; `ping` after 15 s "
                "without another event; `token-expired` at the token's exp",
                "parameters": [
                    SESSION_ID,
                    {"name": "lastEventId", "in": "query", "schema": {"type": "string"}},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {"200": SSE, **_errors(400, 401, 403, 404, 429, 503)},
            }
        },
        "/tickets/{ticket_id}/active": {
            "get": {
                "summary": "The ticket's live session",
                "parameters": [TICKET_ID],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Session"}, "live state"),
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
        "/tickets/{ticket_id}/sessions": {
            "get": {
                "summary": "Archived sessions of a ticket, newest first",
                "parameters": [
                    TICKET_ID,
                    LIMIT,
                    BEFORE,
                    MESSAGES,
                    SERVER,
                    DIRECTORY,
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Page"}, "a page"),
                    **_errors(400, 401, 403, 503),
                },
            }
        },
        "/tickets/{ticket_id}/usage": {
            "get": {
                "summary": "What the ticket's sessions used: the total and each session's (live ones as they run)",
                "parameters": [TICKET_ID],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/TicketUsage"}, "usage"),
                    **_errors(400, 401, 403, 503),
                },
            }
        },
        "/sessions": {
            "get": {
                "summary": "Live sessions (`live=true`) or archived ones (filter by type and ticket); admin",
                "parameters": [
                    {"name": "live", "in": "query", "schema": {"type": "boolean"}},
                    TYPE,
                    {"name": "ticket", "in": "query", "schema": TICKET_ID_SCHEMA},
                    LIMIT,
                    BEFORE,
                    MESSAGES,
                    SERVER,
                    DIRECTORY,
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Page"}, "a page"),
                    **_errors(400, 401, 403, 503),
                },
            }
        },
        "/sessions/live/stream": {
            "get": {
                "summary": "SSE of the live list: `snapshot`, then `appeared` / `status` / `ended`; admin",
                "parameters": [TYPE],
                "responses": {"200": SSE, **_errors(400, 401, 403, 429, 503)},
            }
        },
        "/healthz": {
            "get": {
                "summary": "The process is up and its background tasks run",
                "security": [],
                "responses": {"200": {"description": "ok"}, "503": {"description": "failed: the process exits"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Redis and PostgreSQL answer",
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics; admin",
                "responses": {"200": {"description": "text"}, **_errors(401, 403)},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI"}}}
        },
    },
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(SPEC)
