"""``python -m bottle.runtime.supervise``: run the supervise MCP server."""

import gc

# No cyclic collection while FastMCP, mcp's and pydantic's models import (tens of thousands
# of objects, none of them garbage): about a fifth of supervise's start-up CPU. What they
# made lives as long as the server: frozen out of every later collection's way.
gc.disable()
from bottle.runtime.supervise.server import main  # noqa: E402

gc.freeze()
gc.enable()

if __name__ == "__main__":
    main()
