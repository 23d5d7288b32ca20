"""Keep an imported dataset as ``<datasets_dir>/<name>/{train,test}.parquet`` (atomic folder rename)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.runfolder.runformat import check_run_name
from engine.data.tasks.base import TaskData


def _split_table(samples) -> pa.Table:
    return pa.table({
        "prompt": pa.array([s.prompt for s in samples], pa.string()),
        "response": pa.array([s.response for s in samples], pa.string()),
        "label": pa.array([s.label for s in samples], pa.string()),
    })


def save_dataset(task: TaskData, datasets_dir: Path, name: str) -> Path:
    """Write both splits; the folder appears only when complete. Returns the folder."""
    check_run_name(name)
    final = Path(datasets_dir) / name
    tmp = final.with_name(f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        pq.write_table(_split_table(task.train), tmp / "train.parquet")
        pq.write_table(_split_table(task.test), tmp / "test.parquet")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
