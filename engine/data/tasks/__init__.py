"""Task data: built-in generators (deterministic per seed) and importers of user datasets.

``build_task(name, seed, n_train_per_label, n_test_per_label)`` and ``load_dataset(path)`` both return a
:class:`engine.data.tasks.base.TaskData`.
"""

from engine.data.tasks.base import Sample, TaskData
from engine.data.tasks.generators import TASK_NAMES, build_task
from engine.data.tasks.importers import load_dataset, load_splits

__all__ = ["Sample", "TaskData", "TASK_NAMES", "build_task", "load_dataset", "load_splits"]
