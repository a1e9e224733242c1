"""The engine section of a dataset config, and what Spark needs before it runs (no Spark here)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.engine import EngineConfig, spark_time_format, to_spark_sql
from features.sources import load_dataset

TABLES = {"transactions": {"sources": [{"path": "tx.csv"}]}}


def _write(tmp_path: Path, engine: object) -> Path:
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump({"name": "shop", "engine": engine, "tables": TABLES}))
    return path


def test_engine_defaults_to_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump({"name": "shop", "tables": TABLES}))
    cfg = load_dataset(path)
    assert cfg.engine.kind == "duckdb" and cfg.engine.describe() == "duckdb"


def test_spark_engine_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_MASTER", "spark://head:7077")
    engine = {
        "kind": "spark",
        "master": "${SPARK_MASTER:-local[2]}",
        "driver_memory": "2G",
        "executor_memory": "4g",
        "shuffle_partitions": 64,
        "conf": {"spark.sql.adaptive.enabled": True},
    }
    cfg = load_dataset(_write(tmp_path, engine)).engine
    assert cfg.describe() == "spark (spark://head:7077)"
    assert cfg.spark_conf() == {
        "spark.driver.memory": "2g",
        "spark.executor.memory": "4g",
        "spark.sql.shuffle.partitions": "64",
        "spark.sql.adaptive.enabled": "true",
    }


@pytest.mark.parametrize(
    ("engine", "key", "says"),
    [
        ({"kind": "sparkk"}, "engine.kind", "'duckdb' or 'spark'"),
        ({"kind": "spark", "master": "lokal[2]"}, "engine.master", "not a Spark master URL"),
        ({"kind": "spark", "driver_memory": "2 gigs"}, "engine.driver_memory", "memory size"),
        ({"kind": "spark", "shuffle_partitions": 0}, "engine.shuffle_partitions", "greater"),
        ({"kind": "spark", "executors": 3}, "engine.executors", "Extra inputs"),
        ({"conf": {"spark.sql.ansi.enabled": "false"}}, "engine.conf", "fixed by Patron"),
        ({"conf": {"sql.shuffle": 4}}, "engine.conf", "not a Spark setting"),
    ],
)
def test_a_bad_engine_key_is_one_line_naming_it(
    tmp_path: Path, engine: dict[str, object], key: str, says: str
) -> None:
    path = _write(tmp_path, engine)
    with pytest.raises(ValueError) as err:
        load_dataset(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: ") or f"shop.yaml: {key}: " in message
    assert says in message


def _spark_dataset(tmp_path: Path) -> object:
    (tmp_path / "tx.csv").write_text("customer_id,ts,order_id,amount\nc1,2024-01-01,o1,3\n")
    return load_dataset(_write(tmp_path, {"kind": "spark"}))


def test_spark_without_java_is_one_line_naming_engine_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import features.spark
    from features.sources import ingest
    from features.store import StateDirs

    cfg = _spark_dataset(tmp_path)
    monkeypatch.setattr(features.spark.shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ValueError) as err:
        ingest(cfg, StateDirs.resolve(tmp_path / "home"))  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message and "engine.kind: spark cannot run: no Java runtime" in message
    assert not (tmp_path / "home" / "data").exists()  # refused before anything was written


def test_spark_without_pyspark_is_one_line_naming_engine_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from features.cli import write_features_at
    from features.definitions import feature_set
    from features.store import StateDirs

    cfg = _spark_dataset(tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "pyspark" else real(name, *a)
    )
    with pytest.raises(ValueError, match=r"engine\.kind: spark cannot run: pyspark is not"):
        write_features_at(cfg, feature_set("churn_v1"), None, StateDirs.resolve(tmp_path))


def test_duckdb_functions_transpile_to_spark() -> None:
    assert spark_time_format("%d/%m/%Y %H:%M:%S") == "dd/MM/yyyy HH:mm:ss"
    sql = to_spark_sql(
        "SELECT try_strptime(x, '%Y-%m-%d'), list_extract(['a', 'b'], i + 1) FROM t "
        "WHERE r = ? AND n = ?",
        ["it's", 2],
    )
    assert sql == (
        "SELECT TRY_TO_TIMESTAMP(x, 'yyyy-MM-dd'), ELEMENT_AT(ARRAY('a', 'b'), i + 1) FROM t "
        "WHERE r = 'it\\'s' AND n = 2"
    )


def test_engine_config_rejects_unknown_keys_directly() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        EngineConfig.model_validate({"kind": "spark", "masterr": "local[2]"})


def test_cli_lines_name_the_engine(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from patron.cli import mount

    rows = ["customer_id,ts,order_id,amount"] + [
        f"c{c},2024-0{m}-1{c} 10:00:00,o{c}{m},{10 * m + c}" for c in range(3) for m in range(1, 7)
    ]
    (tmp_path / "tx.csv").write_text("\n".join(rows) + "\n")
    config = str(_write(tmp_path, {"kind": "duckdb"}))
    home = str(tmp_path / "home")
    runner, app = CliRunner(), mount()
    out = runner.invoke(app, ["ingest", "-d", config, "--home", home], catch_exceptions=False)
    assert out.exit_code == 0 and "ingest shop (duckdb)" in out.output
    args = ["features", "-d", config, "--home", home, "--as-of", "2024-03-31", "--churn-labels"]
    out = runner.invoke(app, [*args, "--horizon-days", "30"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "features churn_v1 at 2024-03-31 computed on duckdb" in text
    labels = tmp_path / "home/snapshots/shop/labels_churn_h30_l365/as_of=2024-03-31.parquet"
    assert pd.read_parquet(labels)["label"].tolist() == [0, 0, 0]
