"""``GET /`` (the web page) and ``GET /health`` (status, queue and counters per model);
neither needs the API key (the page asks for one on a 401)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ... import __version__
from .common import server_state

router = APIRouter()


@cache
def page() -> str:
    return (
        resources.files("chatterbox_mlx.server").joinpath("static", "index.html").read_text("utf-8")
    )


@router.get("/", include_in_schema=False)
async def index():
    return HTMLResponse(page(), headers={"Cache-Control": "no-cache"})


@router.get("/health")
async def health(request: Request):
    state = server_state(request)
    return {
        "status": "ok",
        "version": __version__,
        "models": [{"id": s.name, **s.worker.status()} for s in state.models.values()],
        "voices": len(state.library.list()),
    }
