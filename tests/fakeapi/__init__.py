"""A fake model API run as a test container: TLS, scripted turns, every request recorded.

``server.py`` is the program (stdlib only, so it runs in the sidecar image); one module per
API dialect (``anthropic.py``: the Messages API) turns a request and the script into the
reply. The pytest side is ``tests/integration/fakeapi.py``.
"""
