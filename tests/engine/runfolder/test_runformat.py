"""The run-folder format is declared once: the store's schema and the engine's Arrow tables come from it."""

import pyarrow as pa
import pytest

from engine.runfolder import runformat
from store.schema import FILE_TABLES, IN_PLACE_TABLES, PARQUET_TABLES


def test_the_store_schema_is_the_declared_format():
    assert list(FILE_TABLES) == list(runformat.TABLES)
    assert list(PARQUET_TABLES) == [t for t in runformat.TABLES if t not in IN_PLACE_TABLES] and "scores" not in PARQUET_TABLES
    for name, t in runformat.TABLES.items():
        cols, key = FILE_TABLES[name]
        assert list(cols) == list(t.columns) and key == t.key
        assert set(t.key) <= set(t.columns)


def test_tables_are_built_with_exactly_the_declared_columns_and_types():
    t = runformat.table("agreement", [{"checkpoint": 1, "method_a": "a", "method_b": "b", "k": 3, "spearman": 0.5,
                                       "overlap": 1.0, "extra": "ignored"}])
    assert t.schema == runformat.TABLES["agreement"].arrow_schema()
    assert t.schema.field("checkpoint").type == pa.int32() and t.num_rows == 1
    with pytest.raises(ValueError, match="columns"):
        runformat.table("train_loss", epoch=[1])


def test_files_map_to_their_tables():
    assert runformat.table_of_file("scores/x-ckpt1-shard0000.parquet") == "scores"
    assert runformat.table_of_file("metrics.parquet") == "metrics"
    assert runformat.table_of_file("checkpoints/epoch-1/adapter_model.safetensors") is None
    assert runformat.table_of_file("notes.parquet") is None
    assert runformat.scores_file("gradsim", 2, 3) == "scores/gradsim-ckpt2-shard0003.parquet"
