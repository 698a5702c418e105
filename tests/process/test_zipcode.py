"""Modules from a zip on ``sys.path`` load their code once once ``bottle.runtime`` is imported
(as in the sidecar image), and import exactly as zipimport imports them."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# Runs in a fresh interpreter with the zip first on sys.path. Counts zipimport's loads of
# each module's code (the function both zipimporter methods call), imports from the zip,
# and prints what it saw as JSON.
PROBE = """
import json, sys, zipimport
sys.path.insert(0, sys.argv[1])
loads = {}
real = zipimport._get_module_code
def counted(importer, fullname):
    loads[fullname] = loads.get(fullname, 0) + 1
    return real(importer, fullname)
zipimport._get_module_code = counted
import bottle.runtime  # looks in the zip first (a plain zipimporter), then installs
if sys.argv[2] == "plain":
    import importlib
    sys.path_hooks[:] = [zipimport.zipimporter if h is bottle.runtime.zipcode.OnceImporter
                         else h for h in sys.path_hooks]
    sys.path_importer_cache.clear()
import importlib.util
probed = importlib.util.find_spec("zpkg.probed")  # found, never loaded
import zpkg.inner.leaf, zpkg.compiled, zns.part, zpkg.probed
import importlib.resources
print(json.dumps({
    "loads": loads,
    "leaf": zpkg.inner.leaf.VALUE,
    "compiled": zpkg.compiled.VALUE,
    "part": zns.part.VALUE,
    "probed": zpkg.probed.VALUE,
    "file": zpkg.inner.leaf.__file__,
    "data": importlib.resources.files("zpkg").joinpath("data.txt").read_text(),
    "source": zpkg.inner.leaf.__loader__.get_source("zpkg.inner.leaf"),
    "importers": sorted({type(f).__name__ for k, f in sys.path_importer_cache.items()
                         if k.startswith(sys.argv[1])}),
}))
"""


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A zip with a package and a subpackage as sources, a module as bytecode alone, a data
    file, and a namespace package (a directory entry only, as the image's zip has)."""
    compiled = tmp_path / "compiled.py"
    compiled.write_text("VALUE = 'from bytecode'\n")
    pyc = Path(py_compile.compile(str(compiled), cfile=str(tmp_path / "compiled.pyc")))
    path = tmp_path / "lib.zip"
    with zipfile.ZipFile(path, "x", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zpkg/__init__.py", "import zpkg.inner\n")
        z.writestr("zpkg/inner/__init__.py", "")
        z.writestr("zpkg/inner/leaf.py", "from zpkg import inner\nVALUE = 'leaf'\n")
        z.writestr("zpkg/probed.py", "VALUE = 'probed'\n")
        z.writestr("zpkg/data.txt", "data beside the code")
        z.write(pyc, "zpkg/compiled.pyc")
        z.mkdir("zns")
        z.writestr("zns/part.py", "VALUE = 'namespace'\n")
    return path


def _probe(archive: Path, mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(archive), mode],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_each_module_of_a_zip_loads_its_code_once(archive: Path) -> None:
    seen = _probe(archive, "once")
    # find_spec alone loads once; its later import takes the code afresh (the slot moved on).
    assert seen["loads"] == {
        "zpkg": 1,
        "zpkg.inner": 1,
        "zpkg.inner.leaf": 1,
        "zpkg.compiled": 1,
        "zns.part": 1,
        "zpkg.probed": 2,
    }
    assert seen["importers"] == ["OnceImporter"]


def test_zipimport_alone_loads_each_module_twice(archive: Path) -> None:
    """What the fix is against: the probe counts what it claims to count."""
    seen = _probe(archive, "plain")
    loads = seen["loads"]
    assert isinstance(loads, dict)
    assert loads["zpkg.inner.leaf"] == 2
    assert seen["importers"] == ["zipimporter"]


def test_modules_from_the_zip_are_what_zipimport_makes(archive: Path) -> None:
    once, plain = _probe(archive, "once"), _probe(archive, "plain")
    for seen in (once, plain):
        assert seen["leaf"] == "leaf"
        assert seen["compiled"] == "from bytecode"
        assert seen["part"] == "namespace"
        assert seen["probed"] == "probed"
        assert seen["file"] == str(archive / "zpkg" / "inner" / "leaf.py")
        assert seen["data"] == "data beside the code"
        assert seen["source"] == "from zpkg import inner\nVALUE = 'leaf'\n"


def test_nothing_changes_without_a_zip_in_use() -> None:
    code = (
        "import sys; hooks = list(sys.path_hooks); import bottle.runtime\n"
        "assert sys.path_hooks == hooks, sys.path_hooks\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
