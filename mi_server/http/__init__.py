"""MI over HTTP, like OpenSIPS mi_http: the WSGI app and the pre-forked keep-alive server."""

from .app import make_wsgi_app
from .listen import BindError, bind
from .server import run_worker

__all__ = ["BindError", "bind", "make_wsgi_app", "run_worker"]
