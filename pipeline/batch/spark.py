"""The Spark engine: MLflow's ``spark_udf`` over a Spark DataFrame, written as partitioned Parquet (or CSV).

Rows are first checked with the model's own rules on the executors (``mapInArrow`` running the same Arrow →
matrix code as the local engine), because the pyfunc refuses a whole batch with one bad row. The master comes
from ``spark-submit --master`` or ``SPARK_MASTER``, else ``local[*]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa

from pipeline.batch.core import BatchError, Model, Tally, check_columns, now, score_columns, to_matrix

ERROR = "error"


def session() -> Any:
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("diabetes-t2-batch")
    master = os.environ.get("SPARK_MASTER")
    if (master or "local").startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # local workers: this interpreter's packages
    if master:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:  # not under spark-submit, which sets the master itself
        builder = builder.master("local[*]")
    # Larger Arrow batches than the default 10k rows: fewer Python round trips per row.
    return builder.config("spark.sql.execution.arrow.maxRecordsPerBatch", "65536").getOrCreate()


def _ship_code(spark: Any, model: Model) -> None:
    """Executors need this package (the row checks) and the model's own code, which MLflow loaded under a
    generated module name that no executor can import: ship the package, pickle the model's class by value."""
    from pyspark import cloudpickle

    root = Path(__file__).resolve().parents[2]
    if (root / "pipeline").is_dir():  # else it came in an archive (spark-submit --py-files) the executors have
        archive = Path(tempfile.mkdtemp(prefix="batch-code-")) / "pipeline.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            for f in (root / "pipeline").rglob("*.py"):
                zf.write(f, f.relative_to(root).as_posix())
        spark.sparkContext.addPyFile(str(archive))
    module = sys.modules.get(type(model.risk).__module__)
    if module is not None and not module.__name__.startswith("pipeline."):
        cloudpickle.register_pickle_by_value(module)


def _safe_row(model: Model) -> dict[str, Any]:
    """One row every rule accepts, scored in place of an invalid row and then blanked: Spark evaluates Python UDFs
    on every row whatever a surrounding CASE WHEN says, and the pyfunc raises on an invalid row."""
    risk = model.risk
    x = np.clip(risk.impute, risk.lo, risk.hi)
    x = np.where(risk.integer, np.ceil(x), x)
    row = {}
    for j, name in enumerate(model.names):
        cats = model.categories(name)
        row[name] = cats[0] if cats is not None else float(x[j])
    X, errors = to_matrix(model, {n: pa.array([v]) for n, v in row.items()}, 1)
    if errors[0]:
        raise BatchError(f"no valid stand-in row for invalid rows: {errors[0]}")
    return row


def _prepare(model: Model, mapping: dict[str, str], id_columns: list[str]):  # noqa: ANN202 - a Spark callback
    safe = _safe_row(model)

    def prepare(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            n = batch.num_rows
            names = batch.schema.names
            cols = {name: batch.column(col) if col in names else None for name, col in mapping.items()}
            X, errors = to_matrix(model, cols, n)
            invalid = errors != ""
            out = {f"_id{i}": batch.column(c) for i, c in enumerate(id_columns)}
            for j, name in enumerate(model.names):
                cats = model.categories(name)
                if cats is None:
                    values = np.where(invalid, safe[name], X[:, j])
                    out[name] = pa.array(values, pa.float64(), mask=np.isnan(values))
                else:
                    codes = np.where(np.isnan(X[:, j]) | invalid, 0, X[:, j]).astype(np.int64)
                    text = np.asarray(cats, dtype=object)[codes]
                    text[invalid] = safe[name]
                    out[name] = pa.array(text, pa.string(), mask=np.isnan(X[:, j]) & ~invalid)
            out[ERROR] = pa.array(np.where(invalid, errors, None), pa.string())
            yield pa.RecordBatch.from_pydict(out)

    return prepare


def _read(spark: Any, source: str) -> Any:
    kind = "csv" if source.lower().rstrip("/*").endswith(".csv") or _first_is_csv(source) else "parquet"
    reader = spark.read
    if kind == "csv":
        # All columns as text, as the local engine reads CSV: one stray word is one invalid row.
        reader = reader.option("header", True).option("inferSchema", False).option("emptyValue", None)
        return reader.csv(source)
    return reader.parquet(source)


def _first_is_csv(source: str) -> bool:
    p = Path(source)
    if p.is_dir():
        return any(f.suffix.lower() == ".csv" for f in p.rglob("*"))
    return False


def run_spark(
    model: Model,
    mapping: dict[str, str],
    source: str,
    output: str,
    id_columns: list[str],
    contributions: bool,
    max_error_rate: float,
) -> Tally:
    """Score ``source`` into the folder ``output`` (Parquet part files; CSV when it ends in .csv). Written to a
    sibling folder first and renamed only when the job passes its error-rate check."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spark = session()
    _ship_code(spark, model)
    df = _read(spark, source)
    check_columns(model, mapping, df.columns, id_columns)
    wanted = list(dict.fromkeys([*id_columns, *[c for c in mapping.values() if c in df.columns]]))
    df = df.select(*[F.col(f"`{c}`") for c in wanted])

    id_fields = [T.StructField(f"_id{i}", df.schema[c].dataType) for i, c in enumerate(id_columns)]
    feature_fields = [
        T.StructField(n, T.StringType() if model.categories(n) is not None else T.DoubleType()) for n in model.names
    ]
    prepared = df.mapInArrow(
        _prepare(model, mapping, id_columns),
        T.StructType([*id_fields, *feature_fields, T.StructField(ERROR, T.StringType())]),
    )

    spark_types = {pa.float64(): "double", pa.int64(): "long", pa.string(): "string"}
    result_type = ", ".join(f"{f.name} {spark_types[f.type]}" for f in score_columns(model, contributions))
    predict = mlflow.pyfunc.spark_udf(
        spark, model.uri, env_manager="local", result_type=result_type, params={"contributions": contributions}
    )
    scored = prepared.withColumn("_pred", predict(F.struct(*[F.col(n) for n in model.names])))
    valid = F.col(ERROR).isNull()
    out = scored.select(
        *[F.col(f"_id{i}").alias(c) for i, c in enumerate(id_columns)],
        *[F.when(valid, F.col(f"_pred.{f.name}")).alias(f.name) for f in score_columns(model, contributions)],
        F.lit(model.name).alias("model_name"),
        F.lit(model.version).alias("model_version"),
        F.lit(now()).cast("timestamp").alias("scored_at"),
        F.col(ERROR),
    )

    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    target = jvm.org.apache.hadoop.fs.Path(output)
    fs = target.getFileSystem(conf)
    tmp_name = f"{output.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    tmp = jvm.org.apache.hadoop.fs.Path(tmp_name)
    try:
        if output.lower().rstrip("/").endswith(".csv"):
            out.write.option("header", True).csv(tmp_name)
            written = spark.read.option("header", True).csv(tmp_name)
        else:
            out.write.parquet(tmp_name)
            written = spark.read.parquet(tmp_name)
        counts = {row[ERROR]: row["count"] for row in written.groupBy(ERROR).count().collect()}
        tally = Tally()
        tally.add_counts({k: v for k, v in counts.items() if k}, sum(counts.values()))
        if tally.rate <= max_error_rate:
            if fs.exists(target):
                fs.delete(target, True)  # replaced, as the local engine replaces its file
            fs.rename(tmp, target)
        return tally
    finally:
        if fs.exists(tmp):
            fs.delete(tmp, True)
