"""`refseg serve`: a local web page and HTTP API over the streaming engine (`create_app`).

`jobs` keeps uploads and what was asked of them, `runner` streams a job's objects through the
loaded methods (reruns redo only what changed), `app` is the FastAPI app and `static/` the page.
"""

from refseg.serve.app import ServeConfig, create_app
from refseg.serve.runner import Methods

__all__ = ["Methods", "ServeConfig", "create_app"]
