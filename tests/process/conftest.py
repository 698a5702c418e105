"""The unit tests' temporary files in memory serve these tests too: the git-gate relay's
mirrors and clones write thousands of small files a run (and bottle syncs its own)."""

from tests.unit.conftest import tmp_path_factory

__all__ = ["tmp_path_factory"]
