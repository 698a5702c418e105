"""Code that runs inside the sidecar containers; the library never imports it.

Every sidecar's entry point imports this package first: the zips of the sidecar image load
each module's bytecode once from here on (:mod:`.zipcode`; a no-op on the host).
"""

from bottle.runtime import zipcode

zipcode.install()
