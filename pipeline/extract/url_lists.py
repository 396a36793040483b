"""URL-list reader: rows of parquet/csv/tsv/jsonl files (img2dataset's url_col / caption_col) as
candidates, read with pyarrow and streamed where the format allows; dirty rows are dropped with a reason."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa

from pipeline.extract.inputs import maybe_gunzip, open_binary
from pipeline.extract.sink import BATCH_ROWS, Options, PairSink


def _url_list_batches(path: str, fmt: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """Batches of a parquet/csv/tsv/jsonl file, streamed where the format allows."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with open_binary(path) as f:
            pf = pq.ParquetFile(f)
            have = [c for c in columns if c in pf.schema_arrow.names]
            yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=have)
        return
    with open_binary(path) as raw:
        f = maybe_gunzip(raw)
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                f, parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in columns}),
            )
            yield from reader
        else:
            rows = []
            for line in f:
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        obj = None
                    rows.append(obj if isinstance(obj, dict) else {"__bad__": True})
                if len(rows) >= BATCH_ROWS:
                    yield pa.RecordBatch.from_pylist([{c: r.get(c) for c in columns + ["__bad__"]} for r in rows])
                    rows = []
            if rows:
                yield pa.RecordBatch.from_pylist([{c: r.get(c) for c in columns + ["__bad__"]} for r in rows])


def extract_url_list(path: str, fmt: str, sink: PairSink, opts: Options) -> Iterator[pa.RecordBatch]:
    """Rows of a URL list (img2dataset's url_col / caption_col) as candidates; dirty rows dropped."""
    st = sink.stats
    row = 0
    seen_cols = False
    for batch in _url_list_batches(path, fmt, [opts.url_col, opts.caption_col]):
        names = batch.schema.names
        if opts.url_col not in names:
            if batch.num_rows:
                st.error("no_url_column", f"column {opts.url_col!r} not in {names[:20]}")
                return
            continue
        seen_cols = True
        urls = batch.column(names.index(opts.url_col)).to_pylist()
        caps = batch.column(names.index(opts.caption_col)).to_pylist() if opts.caption_col in names else [None] * len(urls)
        bad = batch.column(names.index("__bad__")).to_pylist() if "__bad__" in names else [None] * len(urls)
        st.records += len(urls)
        items, ids = [], []
        for u, c, b in zip(urls, caps, bad):
            if b:
                st.error("invalid_json", f"line {row + 1}")
            else:
                items.append((u if isinstance(u, str) else None, c if isinstance(c, str) else None, None))
                ids.append(str(row))
            row += 1
        sink.add_rows(items, ids)
        yield from sink.full_batch()
    if not seen_cols and st.records == 0:
        st.error("empty_file", path)
