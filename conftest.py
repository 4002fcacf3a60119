"""Repo-level test helpers (pytester); nothing the plugin itself needs."""

from __future__ import annotations

import contextlib

pytest_plugins = ["pytester"]

# pytester's in-process runs (pytester.runpytest) put sys.modules back as it was afterwards, and
# numpy 2 cannot be imported twice in one process ("cannot load module more than once"). A plugin
# that first imports numpy inside such a run (pytest-randomly reseeds numpy's generator; this
# repository's own runs block it with -p no:randomly, the inner runs do not) would break every later
# numpy import of the session. Importing it here, once, keeps it out of that churn.
with contextlib.suppress(ImportError):
    import numpy  # noqa: F401
