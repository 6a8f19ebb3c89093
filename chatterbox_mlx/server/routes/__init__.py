"""The server's routes, one ``APIRouter`` per concern; each reaches the app's
``ServerState`` through ``request.app.state.server`` (``common.server_state``), so
``create_app`` only assembles them (``ROUTERS``)."""

from __future__ import annotations

from . import models, pages, speech, voices

# the web page and /health (no key), then /v1 (the API key where one is set)
ROUTERS = (pages.router, models.router, voices.router, speech.router)

__all__ = ["ROUTERS"]
