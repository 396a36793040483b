"""Stage schemas: Arrow is the source of truth, Spark's form is derived, validators catch drift."""

import pyarrow as pa
import pytest

import schemas
from schemas import SchemaError


def _row(schema: pa.Schema) -> dict:
    sample = {
        pa.string(): "x", pa.int32(): 1, pa.int64(): 2, pa.float32(): 0.5, pa.float64(): 0.25,
        pa.list_(pa.int32()): [1, 2], pa.list_(pa.int16()): [3, 4], pa.binary(): b"\x00\x3c", pa.map_(pa.string(), pa.int64()): [("a", 1)],
    }
    return {f.name: sample[f.type] for f in schema}


@pytest.mark.parametrize("name", sorted(schemas.ALL))
def test_arrow_spark_round_trip(spark, tmp_path, name):
    schema = schemas.get(name)
    table = pa.Table.from_pylist([_row(schema)], schema=schema)
    schemas.validate(table, schema)
    path = str(tmp_path / name)
    df = spark.createDataFrame(table.to_pandas(), schema=schemas.to_spark(schema)) if name != "stats" else None
    if df is None:  # map columns: go through a parquet file written by Arrow
        import pyarrow.parquet as pq

        pq.write_table(table, path + ".parquet")
        df = spark.read.parquet(path + ".parquet")
    schemas.validate_spark(df, schema)
    df.write.parquet(path)
    back = spark.read.parquet(path)
    schemas.validate_spark(back, schema)
    import pyarrow.parquet as pq

    read = pq.read_table(path)
    assert schemas.conform(read, schema).to_pylist() == table.to_pylist()


def test_spark_types_follow_arrow():
    st = schemas.to_spark(schemas.BALANCED)
    types = {f.name: f.dataType.simpleString() for f in st.fields}
    assert types["entry_ids"] == "array<int>"
    assert types["keep_prob"] == "double"
    assert not st["uid"].nullable and st["page_url"].nullable


def test_validator_names_the_column():
    good = pa.Table.from_pylist([_row(schemas.QUERIES)], schema=schemas.QUERIES)
    with pytest.raises(SchemaError, match="missing column 'count'"):
        schemas.validate(good.drop(["count"]), schemas.QUERIES)
    with pytest.raises(SchemaError, match="column 'entry_id' has type int64"):
        schemas.validate(good.set_column(0, "entry_id", pa.array([1], pa.int64())), schemas.QUERIES)
    with pytest.raises(SchemaError, match="column 'entry' has 1 null"):
        schemas.validate(good.set_column(1, "entry", pa.array([None], pa.string())), schemas.QUERIES)
    with pytest.raises(SchemaError, match="unexpected column"):
        schemas.validate(good.append_column("junk", pa.array([1])), schemas.QUERIES)


def test_conform_casts_and_fills_nullable():
    t = pa.table({"uid": ["u"], "url": ["http://a/x.jpg"], "text": ["t"], "text_source": ["alt"], "source_file": ["f"]})
    out = schemas.conform(t, schemas.FILTERED)
    assert out.schema == schemas.FILTERED
    assert out["lang"].null_count == 1
    with pytest.raises(SchemaError, match="missing required column 'uid'"):
        schemas.conform(t.drop(["uid"]), schemas.CANDIDATES)
    with pytest.raises(SchemaError):
        schemas.get("nope")
