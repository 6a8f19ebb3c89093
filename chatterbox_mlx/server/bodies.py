"""Reading request bodies: bounded in size (413 past the limit), JSON for speech,
multipart forms for voice uploads; every refusal an ``APIError`` naming the fix."""

from __future__ import annotations

import json

from .errors import APIError

JSON_LIMIT = 1 << 20  # a speech request is a few kB
DRAIN_LIMIT = 64 << 20  # an oversized body is read (and dropped) up to this, then cut


async def read_body(request, limit: int, what: str) -> bytes:
    """The body, or 413 once it passes ``limit``: at once when Content-Length says it is
    far over, else after reading the rest (dropped) up to DRAIN_LIMIT, so that the client
    gets the answer rather than a reset connection."""
    declared = request.headers.get("content-length", "")
    total = int(declared) if declared.isdigit() and int(declared) > limit + DRAIN_LIMIT else 0
    data = bytearray()
    if not total:
        async for chunk in request.stream():
            total += len(chunk)
            if total <= limit:
                data += chunk
            elif total > limit + DRAIN_LIMIT:
                break
    if total > limit:
        raise APIError(
            413,
            f"the {what} is over the limit of {size(limit)}"
            + (" (--max-upload-mb)" if what == "upload" else ""),
            code="payload_too_large",
        )
    return bytes(data)


def size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n:,} bytes"


MAX_DIGITS = 64  # longer integers in a JSON body are refused (no field needs them)
EXAMPLE = '{"model": "tts-1", "input": "Hello.", "voice": "alloy"}'


class _TooLong(ValueError):
    pass


def _integer(digits: str) -> int:
    if len(digits) > MAX_DIGITS:
        raise _TooLong(f"an integer of {len(digits):,} digits")
    return int(digits)


def _bad_json(problem: str) -> APIError:
    return APIError(
        400,
        f"the request body is not valid JSON ({problem}); send a JSON object such as "
        f"{EXAMPLE} with Content-Type: application/json",
        param="body",
        code="invalid_json",
    )


def require_json(request) -> None:
    """415 unless the body is declared JSON (a web page cannot send that to another
    site without asking first: CORS preflight)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json" and not (
        kind.startswith("application/") and kind.endswith("+json")
    ):
        raise APIError(
            415,
            f"the body must be JSON sent with Content-Type: application/json, not "
            f"{kind or 'no Content-Type'}; e.g. curl -H 'Content-Type: application/json' "
            f"-d '{EXAMPLE}'",
            param="body",
            code="unsupported_media_type",
        )


async def read_json(request):
    """The body as JSON; 400 for anything malformed (bad UTF-8 or syntax, nesting past
    Python's recursion limit, an integer of more than MAX_DIGITS digits)."""
    require_json(request)
    raw = await read_body(request, JSON_LIMIT, "request body")
    try:
        return json.loads(raw, parse_int=_integer)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad_json(str(err)) from None
    except RecursionError:
        raise _bad_json("nested too deeply") from None
    except _TooLong as err:
        raise _bad_json(f"{err}; numbers have at most {MAX_DIGITS} digits") from None


async def read_form(request, limit: int):
    from starlette.datastructures import FormData
    from starlette.formparsers import MultiPartException, MultiPartParser

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(
            400,
            "send the voice as multipart/form-data with the fields `name` and "
            "`file`, e.g. curl -F name=Alice -F file=@alice.wav",
            code="invalid_content_type",
        )
    raw = await read_body(request, limit, "upload")

    async def chunks():
        yield raw

    try:
        form: FormData = await MultiPartParser(
            request.headers, chunks(), max_files=2, max_fields=10
        ).parse()
    except MultiPartException as err:
        raise APIError(
            400, f"the multipart form cannot be read ({err.message})", code="invalid_form"
        ) from None
    return form
