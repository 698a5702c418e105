"""bottle.safefs against real symlinks, FIFOs, devices and large files."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from bottle import safefs
from bottle.safefs import UnsafeFileError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    (path / "transcript").mkdir(parents=True)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "host-secret"
    target.write_text("untouched\n")
    return target


def _in_thread(call: object, timeout: float = 5.0) -> BaseException | object:
    """Run ``call`` and return what it returned or raised; fail if it hangs."""
    result: list[object] = []

    def target() -> None:
        try:
            result.append(call())  # type: ignore[operator]
        except BaseException as exc:
            result.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the call hung"
    return result[0]


def test_append_creates_and_appends_a_regular_file(root: Path) -> None:
    path = root / "transcript" / "run.log"
    for line in (b"one\n", b"two\n"):
        with safefs.open_append_regular(path, root=root) as handle:
            handle.write(line)
    assert path.read_bytes() == b"one\ntwo\n"
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0


def test_append_refuses_a_symlink_and_leaves_its_target(root: Path, outside: Path) -> None:
    path = root / "transcript" / "run.log"
    path.symlink_to(outside)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        safefs.open_append_regular(path, root=root)
    assert outside.read_text() == "untouched\n"


def test_append_refuses_a_dangling_symlink_and_creates_nothing(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "created-by-host"
    path = root / "transcript" / "run.log"
    path.symlink_to(target)
    with pytest.raises(UnsafeFileError):
        safefs.open_append_regular(path, root=root)
    assert not target.exists()


def test_append_refuses_a_symlinked_parent_directory(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "transcript" / "sub").symlink_to(elsewhere)
    with pytest.raises(UnsafeFileError, match="not a directory"):
        safefs.open_append_regular(root / "transcript" / "sub" / "run.log", root=root)
    assert list(elsewhere.iterdir()) == []


def test_append_to_a_fifo_neither_hangs_nor_writes(root: Path) -> None:
    path = root / "transcript" / "run.log"
    os.mkfifo(path)
    outcome = _in_thread(lambda: safefs.open_append_regular(path, root=root))
    assert isinstance(outcome, UnsafeFileError)
    assert "FIFO" in str(outcome)


def test_read_of_a_fifo_does_not_hang(root: Path) -> None:
    path = root / "status.json"
    os.mkfifo(path)
    outcome = _in_thread(lambda: safefs.read_regular(path, root=root))
    assert isinstance(outcome, UnsafeFileError)


def test_read_refuses_a_device(root: Path) -> None:
    # /dev/zero is a real character device: reading it unbounded would never end.
    (root / "zero").symlink_to("/dev/zero")
    with pytest.raises(UnsafeFileError):
        safefs.read_regular(root / "zero", root=root)
    if os.geteuid() == 0:
        os.mknod(root / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
        outcome = _in_thread(lambda: safefs.read_regular(root / "dev", root=root))
        assert isinstance(outcome, UnsafeFileError)
        assert "device" in str(outcome)


def _swap_before_open(monkeypatch: pytest.MonkeyPatch, name: str, swap: object) -> None:
    """Run ``swap()`` once, between safefs's ``lstat`` of ``name`` and its ``open``."""
    real_open = os.open
    done: list[bool] = []

    def open_after_swap(path: object, *args: object, **kwargs: object) -> int:
        if path == name and not done:
            done.append(True)
            swap()  # type: ignore[operator]
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(safefs.os, "open", open_after_swap)


def test_a_file_renamed_over_while_opened_is_read(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # atomic_write renames a new file over the old one; a reader that lands between its
    # lstat and its open (the operator deciding while supervise polls) reads the new file.
    path = root / "1.json"
    path.write_text("old")

    def rename_over() -> None:
        (root / "new").write_text("new")
        os.replace(root / "new", path)

    _swap_before_open(monkeypatch, "1.json", rename_over)
    assert safefs.read_regular(path, root=root) == b"new"


def test_a_fifo_swapped_in_while_opened_is_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = root / "status.json"
    path.write_text("{}")

    def fifo_over() -> None:
        path.unlink()
        os.mkfifo(path)

    _swap_before_open(monkeypatch, "status.json", fifo_over)
    outcome = _in_thread(lambda: safefs.read_regular(path, root=root))
    assert isinstance(outcome, UnsafeFileError)
    assert "FIFO" in str(outcome)


def test_read_is_bounded(root: Path) -> None:
    path = root / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024)  # sparse: large to read, cheap to make
    with pytest.raises(UnsafeFileError, match="more than"):
        safefs.read_regular(path, max_bytes=1024, root=root)
    path.write_bytes(b"x" * 1024)
    assert safefs.read_regular(path, max_bytes=1024, root=root) == b"x" * 1024


def test_read_refuses_a_symlink_to_a_host_file(root: Path, outside: Path) -> None:
    (root / "proposal.json").symlink_to(outside)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        safefs.read_regular(root / "proposal.json", root=root)


def test_missing_file_is_file_not_found(root: Path) -> None:
    with pytest.raises(FileNotFoundError):
        safefs.read_regular(root / "nothing", root=root)


def test_paths_outside_the_root_or_with_dotdot_are_refused(root: Path, outside: Path) -> None:
    with pytest.raises(UnsafeFileError):
        safefs.read_regular(outside, root=root)
    with pytest.raises(UnsafeFileError):
        safefs.read_regular(Path("transcript/../../host-secret"), root=root)


def test_without_root_only_the_last_component_is_checked(root: Path, outside: Path) -> None:
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafeFileError):
        safefs.read_regular(root / "link")
    (root / "plain").write_text("ok")
    assert safefs.read_regular(root / "plain") == b"ok"


def test_iter_regular_lists_files_only(root: Path, outside: Path) -> None:
    directory = root / "proposals"
    directory.mkdir()
    (directory / "1.json").write_text("{}")
    (directory / "2.json").symlink_to(outside)
    os.mkfifo(directory / "3.json")
    (directory / "4.json").mkdir()
    assert list(safefs.iter_regular(directory, root=root)) == ["1.json"]


def test_iter_regular_refuses_a_symlinked_directory(root: Path, tmp_path: Path) -> None:
    (root / "proposals").symlink_to(tmp_path)
    with pytest.raises(UnsafeFileError):
        list(safefs.iter_regular(root / "proposals", root=root))


def test_copy_tree_copies_links_as_links_and_skips_specials(root: Path, outside: Path) -> None:
    source = root / "transcript"
    (source / "claude").mkdir()
    (source / "claude" / "log.jsonl").write_text("line\n")
    (source / "secret").symlink_to(outside)
    (source / "dir-link").symlink_to(outside.parent)
    os.mkfifo(source / "pipe")
    target = root / "snapshots" / "t1"
    target.parent.mkdir()
    skipped = safefs.copy_tree(source, target, root=root)
    assert (target / "claude" / "log.jsonl").read_text() == "line\n"
    assert (target / "secret").is_symlink()
    assert os.readlink(target / "secret") == str(outside)
    assert (target / "dir-link").is_symlink()
    assert not (target / "pipe").exists()
    assert any("pipe" in s and "FIFO" in s for s in skipped)
    assert outside.read_text() == "untouched\n"


def test_copy_tree_refuses_a_symlinked_source(root: Path, tmp_path: Path) -> None:
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(UnsafeFileError):
        safefs.copy_tree(root / "link", root / "copy", root=root)
    assert not (root / "copy").exists()


def test_lock_file_link_is_not_followed(root: Path, tmp_path: Path) -> None:
    from bottle.files import locked

    target = tmp_path / "created-by-host"
    (root / ".decide.lock").symlink_to(target)
    with pytest.raises(OSError), locked(root / ".decide.lock"):
        pass
    assert not target.exists()


def test_atomic_write_sets_the_mode_by_descriptor(root: Path) -> None:
    from bottle.files import atomic_write

    atomic_write(root / "trust.json", "{}", mode=0o600)
    assert stat.S_IMODE((root / "trust.json").stat().st_mode) == 0o600
