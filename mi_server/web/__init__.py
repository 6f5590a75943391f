"""The web page for people (like OpenSIPS mi_html): the queues at a glance, the MI in a browser.

Served by the HTTP listener under its own root (default `/html/`). It knows the server only
through the MI core's `handle` (the same bytes any client sends) and the command registry,
so it needs no contract of its own with the engine.
"""

from .app import WebApp, make_web_app

__all__ = ["WebApp", "make_web_app"]
