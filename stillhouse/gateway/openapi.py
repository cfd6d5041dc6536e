"""The gateway's OpenAPI 3.1 description, served at GET /openapi.json.

The request schema is the one the gateway validates with (protocol.ChatCompletionRequest), so the
description cannot drift from the parser; every error response is the OpenAI error shape.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..openai.responses import ResponsesRequest
from .protocol import ChatCompletionRequest

ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

CHAT_COMPLETION = {
    "type": "object",
    "required": ["choices"],
    "properties": {
        "id": {"type": ["string", "null"]},
        "object": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
    },
}


RESPONSE = {
    "type": "object",
    "required": ["id", "object", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "status": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
    },
}


# One server-sent event: `data:` a chat.completion.chunk, an error object, or [DONE].
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_spec(config: Config) -> dict[str, Any]:
    """The description of this gateway's API routes (not the dashboard's HTML pages)."""
    request = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(request.pop("$defs", {}))
    schemas["ChatCompletionRequest"] = request
    responses_request = ResponsesRequest.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas.update(responses_request.pop("$defs", {}))
    schemas["ResponsesRequest"] = responses_request
    schemas["Response"] = RESPONSE
    schemas["Error"] = ERROR
    schemas["ChatCompletion"] = CHAT_COMPLETION
    keyed = bool(config.gateway.api_keys)
    security: list[dict[str, list[str]]] = [{"bearer": []}] if keyed else []
    errors = {
        "400": _error("malformed JSON, or a missing or ill-typed field (`param` names it)"),
        "404": _error("unknown task"),
        "413": _error("body over gateway.max_body_bytes"),
        "default": _error("the upstream's error, with its status"),
    }
    if keyed:
        errors["401"] = _error("missing or wrong gateway API key")
    tasks = sorted(config.tasks)
    chat = {
        "post": {
            "operationId": "createChatCompletion",
            "summary": "A chat completion, routed to the task's teacher or student and captured",
            "security": security,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"},
                        "examples": {
                            t: {
                                "value": {
                                    "model": t,
                                    "messages": [{"role": "user", "content": "hi"}],
                                }
                            }
                            for t in tasks
                        },
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the completion (JSON), or its chunks as server-sent events",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ChatCompletion"}
                        },
                        "text/event-stream": {"schema": SSE_EVENT},
                    },
                },
                **errors,
            },
        }
    }
    responses = {
        "post": {
            "operationId": "createResponse",
            "summary": "A Responses answer (native from an openai/azure teacher, else bridged)",
            "security": security,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/ResponsesRequest"},
                        "examples": {t: {"value": {"model": t, "input": "hi"}} for t in tasks},
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the Response (JSON), or its events as server-sent events",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Response"}},
                        "text/event-stream": {"schema": SSE_EVENT},
                    },
                },
                **errors,
            },
        }
    }
    retrieve = {
        "get": {
            "operationId": "getResponse",
            "summary": "A kept response by its id",
            "security": security,
            "parameters": [
                {
                    "name": "response_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": _json("the Response", {"$ref": "#/components/schemas/Response"}),
                "404": _error("no response kept under that id"),
                **({"401": errors["401"]} if keyed else {}),
            },
        }
    }
    models = {
        "get": {
            "operationId": "listModels",
            "summary": "The tasks, as OpenAI model objects",
            "security": security,
            "responses": {
                "200": _json(
                    "the task list",
                    {
                        "type": "object",
                        "required": ["object", "data"],
                        "properties": {
                            "object": {"const": "list"},
                            "data": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                ),
                **({"401": errors["401"]} if keyed else {}),
            },
        }
    }
    plain = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Stillhouse gateway", "version": "1"},
        "paths": {
            "/v1/chat/completions": chat,
            "/v1/responses": responses,
            "/v1/responses/{response_id}": retrieve,
            "/v1/models": models,
            "/healthz": {"get": {"responses": {"200": _json("capture health", plain)}}},
            "/metrics": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "Prometheus text",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    }
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
