"""`wit extract`: WARC/WAT files and URL lists → candidate (image URL, text) pairs.

One module per part, in the order a file goes through them:

- ``inputs``: globs, folders and paths files (CC's ``wat.paths.gz``) to a file list; a file's
  format; binary streams for local paths and fsspec URLs; gzip lines that survive a cut.
- ``records``: WARC records for both archive readers: FastWARC while each record is confirmed by the
  next, then a lenient line reader from the first record FastWARC fails on or doubts.
- ``warc`` / ``wat`` / ``url_lists``: the readers, one per kind of input. WARC with the record reader
  (+ resiliparse for charsets and the configured HTML parser), WAT with the record reader + orjson,
  URL lists with pyarrow.
- ``sink``: what the readers share: options, per-file figures, and the sink that turns the images
  read into candidate batches column-wise.
- ``text`` / ``urls``: the clean-up rules, each as a scalar function and a column-wise version
  that gives the same answers (tests compare them).
- ``stage``: one file's extraction, the Spark stage (``run_extract``) and the ``wit extract`` command.
"""

from pipeline.extract.inputs import FORMATS, default_inputs, detect_format, open_binary, read_lines, resolve_inputs
from pipeline.extract.records import LenientHeaders, lenient_records, read_records
from pipeline.extract.sink import BATCH_ROWS, FileStats, Options, PairSink
from pipeline.extract.stage import aggregate, extract_file, run_extract
from pipeline.extract.text import clean_text, clean_text_column
from pipeline.extract.urls import largest_srcset, page_base, resolve_url, resolve_url_column, srcset_candidates, target_uri
from pipeline.extract.warc import PARSERS, extract_warc, image_src
from pipeline.extract.wat import extract_wat

__all__ = [
    "BATCH_ROWS", "FORMATS", "PARSERS", "FileStats", "LenientHeaders", "Options", "PairSink", "aggregate",
    "clean_text", "clean_text_column", "default_inputs", "detect_format", "extract_file", "extract_warc",
    "extract_wat", "image_src", "largest_srcset", "lenient_records", "open_binary", "page_base", "read_lines",
    "read_records", "resolve_inputs", "resolve_url", "resolve_url_column", "run_extract",
    "srcset_candidates", "target_uri",
]
