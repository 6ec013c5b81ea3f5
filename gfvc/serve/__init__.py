"""``gfvc serve``: a live call and a key-frame editor in the browser (``docs/serve.md``)."""

from __future__ import annotations


def create_app(**kwargs):
    """The ASGI app (Starlette is imported only when the server is wanted)."""
    from gfvc.serve.app import create_app as make

    return make(**kwargs)


__all__ = ["create_app"]
