"""The run-folder format, written down once: tables, columns, types, sort keys, manifest fields, and what makes a
folder a complete run. ``engine`` writes run folders with it and ``store`` reads them with it; it imports neither
torch nor DuckDB (only pyarrow), so either side, and the pages, can import it cheaply.

Layout of ``<runs_dir>/<run_name>/`` (every table is one Parquet file, ``scores`` any number of them)::

    manifest.json            written last (see MANIFEST_FIELDS)
    samples.parquet          the train and test samples
    scores/*.parquet         long-form score rows; ``<method>-ckpt<c>.parquet`` by convention (see "Score files")
    metrics.parquet, label_metrics.parquet, agreement.parquet, test_agreement.parquet, train_loss.parquet
    self_influence.parquet, checks.parquet   (absent in runs written before them)
    <analysis>.parquet       the analysis tables (empty or absent when the analysis did not run)
    checkpoints/epoch-<e>/   peft adapter (safetensors + adapter_config.json) per checkpoint; not ingested

``checkpoint`` is the 1-based index of the adapter state that produced the scores, in training order (an epoch
of our fine-tuning, or the n-th checkpoint of a user's adapter); 0 means "not from a checkpoint" (imported
scores). Score sign: larger = training sample more responsible for the test sample (the paper's IF is -score).

Score files: the store reads them in place (it never copies them), so their physical layout is part of the format.
A writer writes one file per (method, checkpoint, training shard), test-major; :meth:`RunWriter.commit
<engine.runfolder.writer.RunWriter.commit>` merges a method's shards into ONE file per (method, checkpoint) sorted by
(test_id, train_id), whose row groups hold whole test prompts (:func:`scores_rows_per_group`): one prompt's full
row is then one row group of one file, found from the row-group statistics. Readers accept any other layout
(run folders written before the merge, foreign writers): any number of files, any order, only slower.

Column types are named once in :data:`TYPES` and mapped to Arrow (for writing) and SQL (for the store).
Atomicity: a run is written into a hidden sibling ``.<run_name>.tmp-<pid>`` and renamed into place after
``manifest.json`` (``status: complete``) is written; :func:`read_manifest` is the one test of "complete".
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import InputError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCORES_DIR = "scores"
CHECKPOINTS_DIR = "checkpoints"
INDEX_DIR = "index"  # the query index (engine.scoring.query_index), when the run keeps one
INDEX_FILE = "index.json"

# type name -> (Arrow type, SQL type)
TYPES: dict[str, tuple[pa.DataType, str]] = {
    "str": (pa.string(), "VARCHAR"),
    "int32": (pa.int32(), "INTEGER"),
    "int64": (pa.int64(), "BIGINT"),
    "float32": (pa.float32(), "FLOAT"),
    "float64": (pa.float64(), "DOUBLE"),
    "bool": (pa.bool_(), "BOOLEAN"),
}


@dataclass(frozen=True)
class Table:
    """One run-folder table: ``columns`` (name -> type name of :data:`TYPES`) in file order, the sort ``key`` the
    store loads it by, key columns that may hold NULL, whether it comes from an analysis stage, and the
    ``optional`` columns that older run folders may lack (the store reads them as NULL)."""

    name: str
    columns: dict[str, str]
    key: tuple[str, ...]
    nullable_keys: tuple[str, ...] = ()
    analysis: bool = False
    doc: str = ""
    optional: tuple[str, ...] = ()  # columns added later: run folders written before them read as NULL
    stage: bool = False  # written by an optional stage only: absent when it did not run (or the run predates it)
    by: str = ""  # the analysis (engine.catalog.analyses) that writes it; "" for the other tables
    order: tuple[str, ...] = ()  # the rows' display order (the pages'), when it is not ``key``

    @property
    def display_order(self) -> tuple[str, ...]:
        """The columns a page sorts the rows by: ``order``, else the ``key``."""
        return self.order or self.key

    @property
    def file(self) -> str:
        """Relative path of the table's file (``scores`` is a folder of files)."""
        return f"{SCORES_DIR}/" if self.name == "scores" else f"{self.name}.parquet"

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([(c, TYPES[t][0]) for c, t in self.columns.items()])

    def sql_columns(self) -> dict[str, str]:
        return {c: TYPES[t][1] for c, t in self.columns.items()}


def _t(name, columns, key, doc, **kw) -> Table:
    return Table(name, columns, tuple(key), doc=doc, **kw)


_S, _I, _L, _F4, _F, _B = "str", "int32", "int64", "float32", "float64", "bool"

_CORE = [
    _t("samples", {"split": _S, "sample_id": _I, "prompt": _S, "response": _S, "label": _S}, ("split", "sample_id"),
       "split is 'train' or 'test'; sample_id counts from 0 within a split"),
    _t("scores", {"method": _S, "checkpoint": _I, "test_id": _I, "train_id": _I, "score": _F4},
       ("method", "checkpoint", "test_id", "train_id"), "score[test_id, train_id] of one method at one checkpoint"),
    _t("metrics", {"method": _S, "checkpoint": _I, "k": _I, "acc": _F, "coverage": _F, "auprc": _F,
                   "chance_acc": _F, "chance_coverage": _F, "best_coverage": _F, "n_distinct_top1": _I,
                   "acc_lo": _F, "acc_hi": _F, "coverage_lo": _F, "coverage_hi": _F},
       ("method", "checkpoint", "k"), "headline metrics of one score matrix (engine.evaluation.metrics.summarize), with "
       "95 % bootstrap intervals over test samples", optional=("acc_lo", "acc_hi", "coverage_lo", "coverage_hi")),
    _t("label_metrics", {"method": _S, "checkpoint": _I, "k": _I, "label": _S, "n_test": _I, "acc": _F,
                         "coverage": _F},
       ("method", "checkpoint", "k", "label"), "the metrics over the test samples of one label"),
    _t("agreement", {"checkpoint": _I, "method_a": _S, "method_b": _S, "k": _I, "spearman": _F, "overlap": _F},
       ("checkpoint", "method_a", "method_b", "k"), "mean per-test Spearman and top-k overlap of two methods"),
    _t("test_agreement", {"checkpoint": _I, "method_a": _S, "method_b": _S, "k": _I, "test_id": _I,
                          "spearman": _F, "overlap": _F},
       ("checkpoint", "method_a", "method_b", "k", "test_id"),
       "per test sample: Spearman and top-k overlap of two methods' score rows (engine.evaluation.metrics.agreement); "
       "an optional table: run folders written before it lack the file"),
    _t("train_loss", {"epoch": _I, "step": _I, "loss": _F}, ("step", "epoch"),
       "fine-tuning loss per step (empty when the run did not fine-tune)"),
    _t("self_influence", {"method": _S, "checkpoint": _I, "train_id": _I, "score": _F},
       ("method", "checkpoint", "train_id"), "s(z_i, z_i) of every training sample (engine.scoring.self_influence), for "
       "the methods where it means something, at the last scored checkpoint", stage=True),
    _t("checks", {"kind": _S, "subject": _S, "checkpoint": _I, "metric": _S, "value": _F, "op": _S,
                  "threshold": _F, "passed": _B, "note": _S},
       ("kind", "subject", "metric", "checkpoint"), "numerical self-checks (engine.evaluation.checks): passed = value op "
       "threshold", stage=True),
]

_ANALYSIS = [
    _t("ihvp_error", {"checkpoint": _I, "level": _S, "description": _S, "dim": _L, "n_blocks": _I, "method": _S,
                      "lambda_c": _F, "iterations": _I, "reference": _S, "rel_error": _F, "cosine": _F,
                      "spearman": _F, "acc": _F, "acc_reference": _F, "acc_exact": _F, "time_s": _F,
                      "time_exact_s": _F, "note": _S},
       ("level", "method", "lambda_c", "iterations"), "iHVP approximation error per parameter subset, against the "
       "exact solve at the same damping (reference names it)",
       nullable_keys=("iterations",), optional=("reference", "acc_reference"), by="ihvp"),
    _t("checkpoint_eval", {"checkpoint": _I, "train_loss": _F, "test_loss": _F, "gen_acc": _F,
                           "behaviour_rate": _F},
       ("checkpoint",), "losses and greedy generation per checkpoint", by="convergence"),
    _t("score_drift", {"method": _S, "checkpoint": _I, "spearman_prev": _F, "top1_same_prev": _F},
       ("method", "checkpoint"), "score stability between consecutive checkpoints", by="convergence"),
    _t("retrain_groups", {"group_id": _S, "kind": _S, "description": _S, "n_removed": _I, "removed": _S,
                          "seed": _I, "param_change": _F, "delta_norm_mean": _F, "delta_norm_std": _F,
                          "ba_norm_mean": _F, "ba_norm_std": _F, "merged_norm_mean": _F, "merged_norm_std": _F,
                          "mean_dloss": _F, "mean_abs_dloss": _F, "kl_mean": _F, "behaviour_rate": _F,
                          "behaviour_change": _F, "gen_acc": _F, "identical": _B, "within_noise": _B,
                          "cached": _B, "time_s": _F, "steps": _I, "seed_abs_dloss": _F, "seed_spread": _F,
                          "seed_rho": _F},
       ("group_id",), "one retraining: a group removed, a noise-floor reseed, an LDS subset, a counterfactual, the "
       "nothing-removed check or a removal repeated at a second seed (with its effect there)",
       optional=("seed", "merged_norm_mean", "merged_norm_std", "within_noise", "cached", "steps", "seed_abs_dloss",
                 "seed_spread", "seed_rho"), by="retrain", order=("kind", "group_id")),
    _t("retrain_modules", {"group_id": _S, "module": _S, "delta_norm": _F, "ba_norm": _F, "merged_norm": _F},
       ("group_id", "module"), "per-module parameter change of a retraining", optional=("merged_norm",), by="retrain"),
    _t("retrain_tests", {"group_id": _S, "test_id": _I, "dloss": _F, "kl": _F, "noise_floor": _F,
                         "within_noise": _B},
       ("group_id", "test_id"), "per-test output change of a retraining, next to the noise floor of that test",
       optional=("noise_floor", "within_noise"), by="retrain"),
    _t("retrain_predictions", {"group_id": _S, "method": _S, "test_id": _I, "predicted": _F},
       ("method", "group_id", "test_id"), "each method's predicted loss change of a retraining", by="retrain"),
    _t("retrain_methods", {"method": _S, "kind": _S, "spearman": _F, "n_pairs": _I, "n_groups": _I,
                           "centred": _F, "per_test": _F, "control": _F, "control_centred": _F,
                           "control_per_test": _F, "n_tests": _I},
       ("method", "kind"), "Spearman of predicted vs actual loss change per method and group kind: pooled, centred "
       "per test prompt and per test prompt, each beside the row-mean control (run folders before the per-kind "
       "split read NULL)", nullable_keys=("kind",),
       optional=("kind", "spearman", "n_groups", "centred", "per_test", "control", "control_centred",
                 "control_per_test", "n_tests"), by="retrain"),
    _t("retrain_lds", {"method": _S, "lds": _F, "lds_lo": _F, "lds_hi": _F, "n_subsets": _I, "alpha": _F,
                       "n_test": _I, "n_boot": _I},
       ("method",), "linear datamodeling score over M random alpha-subsets, with its 95 % bootstrap interval", by="retrain"),
    _t("retrain_counterfactual", {"method": _S, "test_id": _I, "group_id": _S, "k": _I, "dloss": _F,
                                  "random_mean": _F, "random_min": _F, "random_max": _F, "n_random": _I,
                                  "noise_floor": _F, "beats_random": _B, "within_noise": _B, "rank": _I,
                                  "binom_p": _F},
       ("method", "test_id"), "removing a method's top-k for a test prompt vs removing k random samples: its rank "
       "among the random draws and the binomial p over the method's prompts", optional=("rank", "binom_p"),
       by="retrain"),
    _t("retrain_metagrad", {"test_id": _I, "train_id": _I, "score": _F},
       ("test_id", "train_id"), "exact metagradients of the prompts of analysis.metagrad_prompts: -dL(test)/dw_i "
       "through the fine-tuning run (larger = more responsible)", by="retrain"),
    _t("retrain_decomposition", {"method": _S, "part": _S, "lds": _F, "lds_lo": _F, "lds_hi": _F, "n_test": _I,
                                 "n_subsets": _I, "signal": _F, "noise_floor": _F, "n_prompts": _I},
       ("method",), "every method's LDS on the prompts that have metagrad, with what its score assumes, the "
       "subsets' effect on those prompts and their noise floor", by="retrain"),
    _t("stability", {"method": _S, "perturbation": _S, "should_matter": _B, "source": _S, "n_train": _I,
                     "n_test": _I, "k": _I, "overlap": _F, "spearman": _F, "note": _S},
       ("method", "perturbation"), "how far a method's ranking moves when one setting changes: mean top-k overlap "
       "and mean Spearman over the test prompts (engine.analysis.stability)", by="stability"),
    _t("stability_methods", {"method": _S, "stability": _F, "spearman": _F, "n_perturbations": _I, "worst": _S,
                             "worst_overlap": _F, "reference_overlap": _F},
       ("method",), "a method's stability: its mean top-k overlap over the perturbations that should not matter "
       "(1 for a model-free baseline: no setting reaches its scores)", by="stability"),
]

TABLES: dict[str, Table] = {t.name: t for t in _CORE + [
    dataclasses.replace(t, analysis=True, stage=True) for t in _ANALYSIS]}
ANALYSIS_TABLES: tuple[str, ...] = tuple(t.name for t in _ANALYSIS)
# tables that only an optional stage writes (the analyses, self-influence, the self-checks): a run may lack them
STAGE_TABLES: tuple[str, ...] = tuple(t.name for t in TABLES.values() if t.stage)

# Manifest fields a pipeline run writes (imported runs write the subset that applies). RunWriter.commit adds
# format, status, created, versions and files.
MANIFEST_FIELDS: dict[str, str] = {
    "format": "FORMAT_VERSION of the folder",
    "status": "'complete' once committed",
    "created": "ISO-8601 UTC time of the commit",
    "versions": "python and package versions the run used",
    "files": "relative path -> row count of every table file; a folder whose files disagree is not complete",
    "run": "the run (folder) name",
    "kind": "'pipeline' | 'imported'",
    "spec": "the full run spec (engine.spec.run_spec.RunSpec.to_dict())",
    "spec_hash": "sha256 of the spec without its name",
    "model": "base model name",
    "adapter": "the user's adapter folder, or null when the run fine-tuned its own",
    "task": "task name",
    "methods": "methods that scored, in spec order",
    "checkpoints": "the scored checkpoint indices",
    "checkpoint_info": "per checkpoint index: source (epoch-<e> or the user's folder), step, lr weight",
    "feature_plan": "the features the chosen methods and analyses read (engine.features.plan.FeaturePlan)",
    "n_train": "training samples",
    "n_test": "test samples",
    "labels": "distinct labels ([] for an unlabelled dataset: the label metrics are then NULL)",
    "k_default": "the paper's k = floor(n_train / n_labels); without labels min(10, n_train)",
    "device": "torch device the run used",
    "timings": "seconds per stage",
    "peak_memory_mb": "peak memory per stage in MB (engine.pipeline.memory): rss per stage, the run's peak_rss, gpu on "
                      "CUDA; resettable false means each stage reads the process's peak so far",
    "warnings": "one line per method or stage that warned",
    "analyses": "analysis stages that ran",
    "checks_failed": "number of failed numerical self-checks (absent when the checks did not run)",
    "fingerprint": "the settings that decide whether two attribution results are comparable "
                   "(engine.pipeline.fingerprint): loss positions, precision, attention kernel, damping per method, "
                   "projection dimension and seed, query aggregation",
}


def table(name: str, rows: list[dict] | None = None, **columns) -> pa.Table:
    """Arrow table ``name`` with exactly its declared columns and types.

    Either ``rows`` (a list of dicts; missing keys become NULL, extra keys are ignored) or the ``columns`` as
    arrays/lists by name (all of them).
    """
    t = TABLES[name]
    schema = t.arrow_schema()
    if rows is not None:
        return pa.table({c: pa.array([r.get(c) for r in rows], type=schema.field(c).type) for c in t.columns},
                        schema=schema)
    missing = [c for c in t.columns if c not in columns]
    if missing:
        raise ValueError(f"table {name}: columns {missing} not given")
    return pa.table({c: pa.array(columns[c], type=schema.field(c).type) for c in t.columns}, schema=schema)


def table_of_file(relpath: str) -> str | None:
    """Which table a run-folder file belongs to (None for files that are no table, e.g. adapters)."""
    if not relpath.endswith(".parquet"):
        return None
    if relpath.startswith(f"{SCORES_DIR}/"):
        return "scores"
    name = relpath.removesuffix(".parquet")
    return name if name in TABLES else None


# Target rows per row group of a score file. Row groups hold whole test prompts, so a per-prompt read decodes one
# row group; fewer, larger groups cost less to prune. Measured on 1000 prompts x 100k training samples (bench/
# store.py): 1 prompt per group (1000 groups) ~1.7x slower to read one prompt than 2 prompts per group.
SCORES_ROW_GROUP_ROWS = 1 << 18


def scores_rows_per_group(n_per_test: int) -> int:
    """Rows per row group of a score file holding ``n_per_test`` rows per test prompt: a whole number of prompts
    (at least one), about :data:`SCORES_ROW_GROUP_ROWS` rows."""
    n = max(1, int(n_per_test))
    return n * max(1, SCORES_ROW_GROUP_ROWS // n)


def scores_file(method: str, checkpoint: int, shard: int | None = None) -> str:
    """The conventional relative path of one method's score file at one checkpoint (and training shard)."""
    return f"{SCORES_DIR}/{method}-ckpt{checkpoint}" + ("" if shard is None else f"-shard{shard:04d}") + ".parquet"


# ---------------------------------------------------------------------------------------------- reading

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_run_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name, else raise InputError saying what is allowed."""

    if not _NAME_RE.match(name or ""):
        raise InputError(
            f"run name {name!r} is invalid: use 1-128 letters, digits, '_', '-' or '.', not starting with a dot"
        )
    return name


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a complete run folder, or None if ``folder`` is not one (temp, killed, foreign)."""
    folder = Path(folder)
    if folder.name.startswith("."):
        return None
    return checked_manifest(folder)


def checked_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder`` (hidden or not) if it says ``complete`` and every file it lists has its row
    count; None otherwise."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("status") != "complete" or m.get("format") != FORMAT_VERSION:
        return None
    for rel, rows in m.get("files", {}).items():
        p = Path(folder) / rel
        try:
            if not p.is_file() or pq.ParquetFile(p).metadata.num_rows != rows:
                return None
        except (OSError, pa.ArrowException):  # truncated or corrupt Parquet: not a complete run
            return None
    return m


def is_complete(folder: Path) -> bool:
    return read_manifest(folder) is not None


def list_complete_runs(runs_dir: Path) -> list[Path]:
    """Complete run folders under ``runs_dir``, sorted by name."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and is_complete(p))


def index_info(folder: Path) -> dict | None:
    """What a run's query index holds (its ``index/index.json``: checkpoints, methods, size), or None without one."""
    try:
        info = json.loads((Path(folder) / INDEX_DIR / INDEX_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
