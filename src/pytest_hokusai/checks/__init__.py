"""The shipped live suite: one module per concern, collected by ``pytest -m live``.

Run after a plain install with ``pytest --pyargs pytest_hokusai.checks -m live``. Checks use the
plugin's fixtures only; each failing check's message starts with its diagnosis code.
"""
