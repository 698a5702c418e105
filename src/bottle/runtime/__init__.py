"""Code that runs inside the sidecar containers; the library never imports it."""
