"""``python -m bottle.runtime.supervise``: run the supervise MCP server."""

from bottle.runtime.supervise.server import main

if __name__ == "__main__":
    main()
