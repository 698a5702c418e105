"""The supervise sidecar: an MCP server that files the agent's proposals (runs in a container).

``python -m bottle.runtime.supervise`` starts it; see :mod:`bottle.runtime.supervise.server`.
Nothing is imported here: the entry point imports the server with the collector off.
"""
