"""Batch scoring on Spark writes the in-process job's file: the same rows in the same order,
scores, percentiles and deciles, segments and reasons, with and without reasons; the file is
replaced atomically, no row is collected to the driver, and bad engine config is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from features.engine import EngineConfig
from serving.batch import SEGMENT_FIELDS, dataset_engine, file_columns, score_base, score_to_file
from serving.settings import ServingSettings
from tests.serving.conftest import register_copy, serving_settings

pytest.importorskip("pyspark")
if shutil.which("java") is None:
    pytest.skip("Spark needs a Java runtime", allow_module_level=True)

pytestmark = pytest.mark.slow
NAME = "serving-spark-batch-test"
SPARK = EngineConfig(kind="spark", master="local[2]")
VALUES = ["score", "probability", "value", "gross_profit", "npv"]


@pytest.fixture(scope="module")
def setup(served_pipeline):
    state = served_pipeline["state"]
    register_copy(state, served_pipeline["logged"]["model_uri"], NAME, ("champion",))
    settings = ServingSettings.model_validate(
        serving_settings(served_pipeline, NAME, reload_interval_s=0)
    )
    return state, settings


@pytest.fixture(scope="module")
def spark():
    from features.spark import local_spark_session

    # the jobs reuse this session (as a notebook's); a tiny base: two shuffle partitions, no
    # adaptive re-planning (a job per stage), the same results
    conf = {"spark.sql.shuffle.partitions": "2", "spark.sql.adaptive.enabled": "false"}
    session = local_spark_session("local[2]", "patron-batch-scoring", conf)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def parquet_schema(path: Path) -> list[tuple[str, str, str]]:
    """Each column's name, physical and logical Parquet type (what any reader sees)."""
    return [(c.name, c.physical_type, str(c.logical_type)) for c in pq.ParquetFile(path).schema]


def assert_same_file(spark_path: Path, local_path: Path, reasons: bool) -> None:
    local, remote = pd.read_parquet(local_path), pd.read_parquet(spark_path)
    assert list(remote.columns) == list(local.columns) == file_columns(reasons)
    assert parquet_schema(spark_path) == parquet_schema(local_path)
    assert remote["customer_id"].tolist() == local["customer_id"].tolist()  # rows, in order
    floats = VALUES + [c for c in local.columns if c.endswith(("_contribution",))]
    pd.testing.assert_frame_equal(
        remote[floats], local[floats], check_exact=False, rtol=1e-12, atol=1e-15
    )
    # ranks over the whole base, segments, reason features and values, model facts: exactly
    exact = [c for c in local.columns if c not in floats]
    pd.testing.assert_frame_equal(remote[exact], local[exact], check_exact=True)
    # what makes the ranks and segments a test: tied scores, several deciles and RFM codes
    assert local["score"].duplicated().any() and local["decile"].nunique() >= 5
    assert local["segment_rfm_code"].nunique() > 10


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- config (no Spark)


def test_the_dataset_yaml_chooses_the_engine(setup, tmp_path, monkeypatch):
    (tmp_path / "shop.yaml").write_text(
        "name: shop\ntables: {}\nengine: {kind: spark, master: 'local[3]'}\n"
    )
    engine, where = dataset_engine("shop", tmp_path)
    assert (engine.kind, engine.master) == ("spark", "local[3]") and where.endswith("shop.yaml")
    assert dataset_engine("not_a_dataset", tmp_path)[0].kind == "duckdb"  # no YAML: in process
    (tmp_path / "bad.yaml").write_text("name: bad\ntables: {}\nengine: {kind: spark, master: x}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: engine.master: 'x' is not a Spark master"):
        dataset_engine("bad", tmp_path)
    # `patron score` follows the served dataset's YAML: Spark when it says so
    state, settings = setup
    calls: list[tuple] = []
    monkeypatch.setattr("serving.batch.dataset_engine", lambda name: (engine, where))
    monkeypatch.setattr("serving.spark_batch.score_base_spark", lambda *a: calls.append(a))
    score_to_file("churn", tmp_path / "s.parquet", state, settings, reasons=False)
    assert calls and calls[0][3] is engine and calls[0][5] is False and calls[0][-1] == where


def test_no_java_is_one_line_naming_the_key(setup, tmp_path, monkeypatch):
    state, settings = setup
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ValueError) as err:
        score_to_file("churn", tmp_path / "s.parquet", state, settings, engine=SPARK)
    assert str(err.value) == (
        "patron score: engine.kind: spark cannot run: "
        "no Java runtime (java is not on PATH and JAVA_HOME is not set)"
    )


def test_a_master_that_does_not_start_is_one_line_naming_engine_master(tmp_path):
    # a fresh process (a JVM this one started before would take the master unchecked): YARN
    # without HADOOP_CONF_DIR, refused when Spark starts
    code = (
        "from features.engine import EngineConfig\n"
        "from serving.spark_batch import _start\n"
        "try:\n"
        "    _start(EngineConfig(kind='spark', master='yarn'), 'shop.yaml')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=300,
    )
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith(
        "shop.yaml: engine.master: cannot start Spark at 'yarn': "
    )


# --------------------------------------------------------------------------- on Spark


@pytest.mark.parametrize("reasons", [True, False], ids=["reasons", "scores-only"])
def test_spark_file_equals_the_in_process_file(setup, spark, tmp_path, monkeypatch, reasons):
    state, settings = setup
    local = score_base(state, settings, tmp_path / "local.parquet", reasons=reasons)

    frame_class = type(spark.range(1))  # the classic DataFrame: no row may reach the driver

    def refuse(self, *args, **kwargs):  # noqa: ANN001, ANN202
        raise AssertionError("batch scoring on Spark brought rows to the driver")

    for method in ("collect", "toPandas", "toLocalIterator", "take", "head"):
        monkeypatch.setattr(frame_class, method, refuse)
    calls: list[tuple[int, int]] = []
    stages: list[str] = []
    out = score_to_file(
        "churn",
        tmp_path / "spark.parquet",
        state,
        settings,
        reasons=reasons,
        progress=lambda *a: calls.append(a),
        stage=stages.append,
        engine=SPARK,
    )
    assert_same_file(out, local, reasons)
    assert no_temporaries(tmp_path)
    assert stages[1] == "scoring churn on spark (local[2]): partitions"
    assert calls and calls[-1][0] == calls[-1][1] > 0  # partitions done, ending complete
    assert {f"segment_{k}" for k in SEGMENT_FIELDS} <= set(pd.read_parquet(out).columns)


def test_a_rerun_replaces_the_file_atomically(setup, spark, tmp_path, monkeypatch):
    state, settings = setup
    out = tmp_path / "scores.parquet"
    score_base(state, settings, tmp_path / "local.parquet", reasons=False)
    old = pd.read_parquet(tmp_path / "local.parquet").head(10)
    old.to_parquet(out)  # the file of an earlier run
    before = (out.stat().st_ino, out.read_bytes())

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("stopped after the scoring pass")

    # a run that fails after the executors scored: the old file is untouched, nothing is left
    with monkeypatch.context() as patch:
        patch.setattr("serving.spark_batch._ranks", broken)
        with pytest.raises(RuntimeError, match="stopped after the scoring pass"):
            score_to_file("churn", out, state, settings, reasons=False, engine=SPARK)
    assert (out.stat().st_ino, out.read_bytes()) == before
    assert no_temporaries(tmp_path)
    # a run that succeeds replaces the file by a rename (a new inode): the whole base
    score_to_file("churn", out, state, settings, reasons=False, engine=SPARK)
    assert out.stat().st_ino != before[0]
    assert_same_file(out, tmp_path / "local.parquet", reasons=False)
    assert no_temporaries(tmp_path)
