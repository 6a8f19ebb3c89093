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


async def read_json(request):
    raw = await read_body(request, JSON_LIMIT, "request body")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise APIError(
            400,
            f"the request body is not valid JSON ({err}); send a JSON object "
            'such as {"model": "tts-1", "input": "Hello.", "voice": "alloy"} with '
            "Content-Type: application/json",
            param="body",
            code="invalid_json",
        ) from None


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
