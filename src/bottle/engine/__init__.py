"""The only code that talks to Docker (through python-on-whales, and the docker CLI where
python-on-whales cannot stream). It returns bottle's own types, never python-on-whales'.

* ``compose``  one instance's compose project: up, exec, logs, kill, down, ps
* ``images``   building and finding images, making the offline base
* ``errors``   the boundary where python-on-whales' exceptions become bottle's
* ``seam``     the ``Engine``/``Project`` protocols the rest of bottle uses, and ``DockerEngine``
"""
