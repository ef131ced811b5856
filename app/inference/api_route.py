"""Routes that know their API family: a bounded request body, and errors in the family's format.

Every route of a family is an ``ApiRoute`` of that family. Before the route's own handler, it
reads the body up to MAX_BODY_BYTES (a larger declared ``Content-Length`` is a 413 before a
byte is read); then every error the handler raises (validation, prompt, admission, auth)
leaves as an ``ApiError`` stamped with the family, so it is answered in that API's format.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.inference.api_model import INVALID_UNICODE, UNSUPPORTED_FIELD
from app.inference.engine import PromptError
from app.inference.state import Api, ApiError, get_state

_OWN_MESSAGES = (INVALID_UNICODE, UNSUPPORTED_FIELD)
# Pydantic's error types for a body that is not a JSON object at all.
_NOT_AN_OBJECT = ("model_attributes_type", "model_type", "dict_type")


def validation_message(error: RequestValidationError) -> str:
    """One message for a body that failed validation, naming each field that is wrong."""
    items = list(error.errors())
    # A union (``str | list[Part]``) reports every branch; our own refusals say it better.
    own = [item for item in items if item.get("type") in _OWN_MESSAGES]
    problems = []
    for item in own or items:
        location = ".".join(
            str(part) for part in item.get("loc", ()) if part != "body" and "[" not in str(part)
        )
        if item.get("type") == INVALID_UNICODE:
            problems.append(str(item.get("msg", "")))  # the message names the field itself
            continue
        if item.get("type") == UNSUPPORTED_FIELD:
            problems.append(f"{location}: {item['msg']}" if location else item["msg"])
            continue
        if item.get("type") == "json_invalid":
            return "The request body is not valid JSON: " + str(item.get("msg", ""))
        if tuple(item.get("loc", ())) == ("body",) and item.get("type") in _NOT_AN_OBJECT:
            return (
                "The request body must be a JSON object, sent with "
                "'Content-Type: application/json'."
            )
        problems.append(f"{location}: {item.get('msg', 'invalid')}" if location else item["msg"])
    return "Invalid request: " + "; ".join(problems)


async def _read_bounded_body(request: Request) -> None:
    """Read the body into the request, or 413 as soon as it is known to be too large."""
    limit = get_state(request).settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(f"{int(declared)} bytes", limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(f"more than {limit} bytes", limit)
    # Starlette's Request caches the body here; FastAPI then parses it from the cache.
    request._body = bytes(body)


def _too_large(size: str, limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is {size}, over this server's limit of {limit} bytes "
        "(MAX_BODY_BYTES). Send a shorter prompt.",
        "request_too_large",
    )


class ApiRoute(APIRoute):
    """A route of one API family (``api``); see the module's docstring."""

    api: ClassVar[Api]

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        api = self.api

        async def route(request: Request) -> Response:
            try:
                if request.method == "POST":
                    await _read_bounded_body(request)
                return await handler(request)
            except ApiError as error:
                raise error.for_api(api) from None
            except PromptError as error:
                raise ApiError(400, str(error), api=api) from error
            except RequestValidationError as error:
                raise ApiError(400, validation_message(error), api=api) from error
            except HTTPException as error:  # FastAPI's own, e.g. an unreadable body
                raise ApiError(error.status_code, str(error.detail), api=api) from error

        return route


def route_class(api: Api) -> type[ApiRoute]:
    """The route class of ``api``'s router: ``APIRouter(route_class=route_class(api))``."""
    return type(f"{api.name.title()}Route", (ApiRoute,), {"api": api})


def error_responses(*statuses: int, model: Any) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route really answers, in ``model``'s shape."""
    return {status: {"model": model, "description": _MEANING[status]} for status in statuses}


_MEANING = {
    400: "Invalid request: the message names the field and what is supported",
    401: "Missing or wrong API key (when API_KEY is set)",
    404: "No such model (the message names the served one)",
    413: "Request body over MAX_BODY_BYTES",
    429: "Server busy: MAX_CONCURRENCY generating and MAX_QUEUE waiting; retry after a while",
    503: "The model is loading, failed to load, or the server is shutting down",
}
