"""WARC writing: one part's pages as request, response and metadata records (gzip per record, as
Common Crawl writes them), and the part's CDX-style index rows. The file is opened through the
storage layer, so a part may be written to any filesystem."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from urllib.parse import urlsplit, urlunsplit

from pipeline import storage
from pipeline.fetch import FetchResult

ACCEPT = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"


class WarcPart:
    """One WARC part: a warcinfo record, then request/response/metadata per page; the index rows."""

    def __init__(self, path: str, name: str, user_agent: str, part_of: str):
        from warcio.warcwriter import WARCWriter

        self.name, self.ua = name, user_agent
        fs, p = storage.fs_for(path)
        self.f = fs.open(p, "wb")
        self.writer = WARCWriter(self.f, gzip=True, warc_version="1.0")
        self.index: list[dict] = []
        info = {"software": "wit-builder crawl", "format": "WARC File Format 1.0", "http-header-user-agent": self.ua,
                "robots": "obey", "isPartOf": part_of}
        w = self.writer
        w.write_record(w.create_warcinfo_record(name, info))

    def add(self, result: FetchResult, depth: int) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        w, url, body = self.writer, result.url, result.data
        parts = urlsplit(url)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        resp_id = f"<urn:uuid:{uuid.uuid4()}>"
        common = {"WARC-Date": now}
        path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        request = StatusAndHeaders(f"GET {path} HTTP/1.1", [
            ("Host", parts.netloc), ("User-Agent", self.ua), ("Accept", ACCEPT), ("Accept-Encoding", "identity")],
            is_http_request=True)
        w.write_record(w.create_warc_record(url, "request", http_headers=request, warc_headers_dict={
            **common, "WARC-Concurrent-To": resp_id}))
        headers = []
        for k, v in result.headers:  # the body is stored decoded: say so, as Common Crawl does
            low = k.lower()
            if low in ("transfer-encoding", "content-encoding", "content-length"):
                if low != "content-length":
                    headers.append((f"X-Crawler-{k}", v))
                continue
            headers.append((k, v))
        headers.append(("Content-Length", str(len(body))))
        offset = self.f.tell()
        w.write_record(w.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body),
            http_headers=StatusAndHeaders(result.status_line, headers, protocol=result.protocol),
            warc_headers_dict={**common, "WARC-Record-ID": resp_id}))
        length = self.f.tell() - offset
        meta_b = f"crawl-depth: {depth}\r\nfetch-attempts: {result.attempts}\r\n".encode()
        w.write_record(w.create_warc_record(
            url, "metadata", payload=io.BytesIO(meta_b), length=len(meta_b), warc_content_type="application/warc-fields",
            warc_headers_dict={**common, "WARC-Concurrent-To": resp_id}))
        mime = dict((k.lower(), v) for k, v in result.headers).get("content-type", "")
        self.index.append({"url": url, "status": result.http_status, "mime": mime.split(";")[0].strip(),
                           "file": self.name, "offset": offset, "length": length})

    def close(self) -> None:
        self.f.close()
