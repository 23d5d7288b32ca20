"""Run folders: a commit replaces a run atomically and leaves no hidden folder; what dead processes left behind
(``.tmp-<pid>`` and ``.old-<pid>``) is removed by the next run of that name."""

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from engine.runfolder.runformat import list_complete_runs, read_manifest
from engine.runfolder.writer import open_run


def _commit(runs, name, value):
    """A complete run ``name`` whose one table holds ``value``."""
    with open_run(runs, name) as w:
        w.write_table("t.parquet", pa.table({"x": [value]}))
        return w.commit({"run": name, "value": value})


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _leftover(runs, name, tag, pid, complete_value=None):
    """A hidden ``.<name><tag><pid>`` folder: a complete run folder when ``complete_value`` is given."""
    if complete_value is not None:
        folder = _commit(runs, f"src-{tag.strip('.-')}", complete_value)
        target = runs / f".{name}{tag}{pid}"
        os.replace(folder, target)
        return target
    target = runs / f".{name}{tag}{pid}"
    (target / "scores").mkdir(parents=True)
    (target / "scores" / "part.parquet").write_bytes(b"half-written")
    return target


def test_replacing_a_run_leaves_only_the_new_folder(tmp_path):
    _commit(tmp_path, "r", 1)
    _commit(tmp_path, "r", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert read_manifest(tmp_path / "r")["value"] == 2


def test_an_old_folder_left_by_this_process_does_not_block_the_next_commit(tmp_path):
    """An earlier commit of this process whose removal of the old folder was cut short left ``.r.old-<pid>``:
    the next replacement must still succeed (a rename onto a non-empty folder fails) and remove it."""
    _commit(tmp_path, "r", 1)
    _leftover(tmp_path, "r", ".old-", os.getpid())
    _commit(tmp_path, "r", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert read_manifest(tmp_path / "r")["value"] == 2


@pytest.mark.parametrize("tag", [".tmp-", ".old-"])
def test_leftovers_of_dead_processes_are_removed_by_the_next_run(tmp_path, tag):
    _commit(tmp_path, "r", 1)
    dead = _leftover(tmp_path, "r", tag, _dead_pid())
    alive = _leftover(tmp_path, "r", tag, os.getppid())  # a live process's folder is its own business
    other = _leftover(tmp_path, "other", tag, _dead_pid())  # another run's leftovers wait for that run
    with open_run(tmp_path, "r"):
        assert not dead.exists()
        assert alive.exists() and other.exists()
    assert [p.name for p in list_complete_runs(tmp_path)] == ["r"]


def test_a_commit_killed_between_its_renames_gets_the_old_run_back(tmp_path):
    """The process died after moving the old run aside and before renaming the new one into place: no run is
    at the final path. The next run of that name puts the complete old folder back (and, if that run fails
    too, the old run is what remains)."""
    pid = _dead_pid()
    _leftover(tmp_path, "r", ".old-", pid, complete_value=1)
    _leftover(tmp_path, "r", ".tmp-", pid)  # the new run, not committed
    with pytest.raises(RuntimeError, match="boom"):
        with open_run(tmp_path, "r"):
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert read_manifest(tmp_path / "r")["value"] == 1


def test_an_incomplete_old_folder_is_never_put_back(tmp_path):
    _leftover(tmp_path, "r", ".old-", _dead_pid())  # half deleted: no manifest
    with open_run(tmp_path, "r"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_ends_without_a_commit_leaves_nothing(tmp_path):
    with open_run(tmp_path, "r") as w:
        w.write_table("t.parquet", pa.table({"x": [1]}))
    assert list(tmp_path.iterdir()) == []
