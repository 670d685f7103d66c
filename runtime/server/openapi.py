"""The server's own OpenAPI 3.1 document (``GET /openapi.json``), built from the rules it enforces.

The request schema is generated from :data:`validation.FIELDS` (types, bounds, lengths, enums,
the size pattern) plus what only the loaded package knows (its model names and styles), so the
document and the validator cannot disagree. What JSON Schema cannot say (a prompt needs a
visible character, no lone surrogates, a size must fit the package's bounds) is in the field
descriptions and answered with a documented 400. Every error status the server can return is
listed with the OpenAI error envelope, so a contract tester (schemathesis) can hold the server
to it.
"""

from __future__ import annotations

from typing import Any

from nanoedge import __version__

from .validation import FIELDS, MAX_JSON_DEPTH, MAX_NUMBER_CHARS, Field

_JSON = "application/json"


def _field_schema(spec: Field, styles: list[str]) -> dict[str, Any]:
    schema: dict[str, Any]
    if spec.kind == "neutral":
        schema = {"enum": [*spec.choices, None]}
    elif spec.kind == "string":
        choices = list(spec.choices) or (styles if spec.name == "style" else [])
        schema = {"type": "string" if spec.required else ["string", "null"]}
        if choices:
            schema["enum"] = [*choices, *([] if spec.required else [None])]
        else:
            schema["maxLength"] = spec.max_chars
            if spec.required:
                schema["minLength"] = 1
            if spec.pattern:
                schema["pattern"] = spec.pattern
    else:
        schema = {"type": [spec.kind, "null"], "minimum": spec.minimum, "maximum": spec.maximum}
        if spec.kind == "integer":
            schema["minimum"], schema["maximum"] = int(spec.minimum or 0), int(spec.maximum or 0)
    notes = [spec.description]
    if spec.visible:
        notes.append("Must contain a letter, digit, punctuation mark or symbol.")
    if spec.kind == "string":
        notes.append("Lone UTF-16 surrogates are refused.")
    if spec.fold_case:
        notes.append("Case-insensitive.")
    if spec.extension:
        notes.append("nanoedge extension.")
    schema["description"] = " ".join(notes)
    return schema


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    if retry_after:
        response["headers"] = {
            "Retry-After": {"description": "Seconds to wait (1-60).", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
        }
    return response


def _common_errors(auth: bool) -> dict[str, Any]:
    errors = {
        "500": _error("A bug; the message has the request id."),
        "503": _error("Loading or draining.", retry_after=True),
    }
    if auth:
        errors["401"] = _error("Missing or wrong API key.")
    return errors


def build_openapi(model_names: list[str], styles: list[str], auth: bool, size_note: str) -> dict[str, Any]:
    """The document for one running server (its model names, styles and key requirement)."""
    properties = {spec.name: _field_schema(spec, styles) for spec in FIELDS}
    properties["model"]["examples"] = model_names
    properties["size"]["description"] += " " + size_note
    request_schema = {
        "type": "object",
        "properties": properties,
        "required": [spec.name for spec in FIELDS if spec.required],
        "additionalProperties": False,
        "description": f"JSON null means 'not given'. Bodies over 1 MiB, nested deeper than {MAX_JSON_DEPTH} levels or with number "
        "literals "
        f"longer than {MAX_NUMBER_CHARS} characters are refused with 400/413.",
    }
    nullable_string = {"type": ["string", "null"]}
    schemas = {
        "CreateImageRequest": request_schema,
        "ErrorResponse": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": nullable_string,
                        "code": nullable_string,
                    },
                }
            },
        },
        "Image": {
            "type": "object",
            "properties": {"url": {"type": "string"}, "b64_json": {"type": "string"}, "revised_prompt": {"type": "string"}},
            "additionalProperties": False,
        },
        "ImagesResponse": {
            "type": "object",
            "required": ["created", "data"],
            "properties": {
                "created": {"type": "integer"},
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
                "size": {"enum": ["1024x1024", "1024x1536", "1536x1024"]},
                "quality": {"enum": ["low", "medium", "high"]},
                "output_format": {"enum": ["png", "jpeg", "webp"]},
            },
            "additionalProperties": False,
        },
        "ImageGenStreamEvent": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "b64_json", "created_at", "size", "quality", "background", "output_format", "partial_image_index"],
                    "properties": {"type": {"const": "image_generation.partial_image"}, "partial_image_index": {"type": "integer"}},
                },
                {
                    "type": "object",
                    "required": ["type", "b64_json", "created_at", "size", "quality", "background", "output_format", "usage"],
                    "properties": {"type": {"const": "image_generation.completed"}, "usage": {"type": "object"}},
                },
                {
                    "type": "object",
                    "required": ["type", "error"],
                    "properties": {
                        "type": {"const": "error"},
                        "error": {"type": "object", "required": ["message", "type", "param", "code"]},
                    },
                },
            ]
        },
        "ServerSentEvent": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"enum": ["image_generation.partial_image", "image_generation.completed", "error"]},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"$ref": "#/components/schemas/ImageGenStreamEvent"},
                },
            },
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            },
        },
        "ListModelsResponse": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}},
        },
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    }
    api_errors = _common_errors(auth)
    security: list[dict[str, list[str]]] = [{"bearer": []}] if auth else []
    paths = {
        "/v1/images/generations": {
            "post": {
                "operationId": "createImage",
                "summary": "Generate images from a prompt.",
                "security": security,
                "requestBody": {"required": True, "content": {_JSON: {"schema": {"$ref": "#/components/schemas/CreateImageRequest"}}}},
                "responses": {
                    "200": {
                        "description": "The images.",
                        "headers": {"x-nanoedge-seed": {"description": "The seed used.", "schema": {"type": "string"}}},
                        "content": {
                            _JSON: {"schema": {"$ref": "#/components/schemas/ImagesResponse"}},
                            # stream: true: each event's data (JSON) is the official ImageGenStreamEvent or an error
                            "text/event-stream": {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}},
                        },
                    },
                    "400": _error("A field is invalid (param names it) or the body is malformed."),
                    "404": _error("Unknown model."),
                    "413": _error("The body is over 1 MiB."),
                    "429": _error("The queue is full.", retry_after=True),
                    "504": _error("The request timeout passed; x-should-retry says whether retrying can help."),
                    **api_errors,
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "security": security,
                "responses": {
                    "200": {
                        "description": "Served model names.",
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ListModelsResponse"}}},
                    },
                    **api_errors,
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "security": security,
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "One model.", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Model"}}}},
                    "404": _error("Unknown model."),
                    **api_errors,
                },
            }
        },
        "/v1/images/files/{name}": {
            "get": {
                "operationId": "getImageFile",
                "summary": "An image behind response_format=url (no key needed; names are random and expire).",
                "security": [],
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {
                        "description": "The image.",
                        "content": {
                            t: {"schema": {"type": "string", "format": "binary"}} for t in ("image/png", "image/jpeg", "image/webp")
                        },
                    },
                    "404": _error("No such file, or it expired."),
                    "500": _error("A bug."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": {"description": "The process is up.", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Status"}}}},
                    "500": _error("A bug."),
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "security": [],
                "responses": {
                    "200": {"description": "Ready to generate.", "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Status"}}}},
                    "503": _error("Loading, failed or draining.", retry_after=True),
                    "500": _error("A bug."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "security": [],
                "responses": {
                    "200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "500": _error("A bug."),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": {
                    "200": {"description": "This document.", "content": {_JSON: {"schema": {"type": "object"}}}},
                    "503": _error("Still loading.", retry_after=True),
                    "500": _error("A bug."),
                },
            }
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "nanoedge image server",
            "version": __version__,
            "description": "OpenAI-compatible image generation on the local box.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if auth:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document


__all__ = ["build_openapi"]
