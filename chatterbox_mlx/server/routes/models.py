"""``GET /v1/models``, ``/v1/models/{id}`` (OpenAI's model objects) and
``GET /v1/audio/models`` (each model with its defaults and parameters)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..errors import APIError
from .common import check_key, server_state

router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])


def openai_models(request: Request) -> list[dict]:
    """OpenAI's model objects (``/v1/models``)."""
    state = server_state(request)
    return [
        {"id": m["id"], "object": "model", "created": state.started, "owned_by": m["owned_by"]}
        for m in state.model_objects()
    ]


@router.get("/models")
async def list_models(request: Request):
    return {"object": "list", "data": openai_models(request)}


@router.get("/models/{model_id}")
async def get_model(model_id: str, request: Request):
    for m in openai_models(request):
        if m["id"] == model_id:
            return m
    raise APIError(
        404,
        f"no model {model_id!r}; served: {', '.join(server_state(request).models)}",
        param="model",
        code="model_not_found",
    )


@router.get("/audio/models")
async def audio_models(request: Request):
    return {"models": server_state(request).model_objects()}
