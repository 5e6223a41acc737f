"""``alignrec serve``: an HTTP lookup service (FastAPI + uvicorn) over a published top-K cache.

Needs the ``serve`` extra (``pip install 'alignrec[serve]'``); importing this package does not.
"""

from inference.serve.config import ServeConfig

__all__ = ["ServeConfig"]
