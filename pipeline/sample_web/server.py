"""The sample web's HTTP server: static files from ``site/`` plus the faults a real crawl meets.

Faults are keyed by URL path in ``site/faults.json`` (written by the generator). For the crawler it
also serves a home page ``/`` linking to every page, a robots.txt (Disallow /private/ and /cgi-bin/,
a Crawl-delay when the server is started with one, a Sitemap: index → page list) and crawler traps: an endless calendar, session-id URLs and a link farm. Handlers that
stall (slow_first_byte, slow_drip, huge_body) stop as soon as the client disconnects or the
server stops, so tests can start and stop servers many times without leaking threads.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pipeline.errors import UserError

# Every fault, and the download failure reason it must end in with the default download config.
FAULT_STATUS = {
    "http_404": "http_404",
    "http_500_once": "success",
    "slow_first_byte": "success",
    "slow_drip": "timeout",
    "truncated": "decode_error",
    "html_not_image": "not_image",
    "wrong_content_type": "success",
    "redirect_chain": "success",
    "redirect_loop": "too_many_redirects",
    "redirect_other_port": "blocked_address",
    "redirect_private": "blocked_address",
    "redirect_file": "blocked_scheme",
    "noai": "opted_out_header",
    "bomb": "decompression_bomb",
    "huge_body": "too_large",
}
FAULTS = list(FAULT_STATUS)
# Faults whose URL has no image file of its own behind it.
FAULTS_WITHOUT_FILE = {
    "http_404", "html_not_image", "redirect_loop", "redirect_other_port", "redirect_private",
    "redirect_file", "bomb", "huge_body",
}

SLOW_FIRST_BYTE_S = 1.5
DRIP_EVERY_S = 0.5
DRIP_FOR_S = 120.0
HUGE_BODY_BYTES = 150 * 1024 * 1024
REDIRECT_HOPS = 3
PRIVATE_TARGET = "http://10.0.0.1"
FILE_TARGET = "file:///etc/passwd"
BOMB_FILE = "bomb.png"
HTML_BODY = b"<!DOCTYPE html><html><head><title>Not found</title></head><body><p>Sorry, this is a page, not an image.</p></body></html>\n"

# The crawl side of the sample web (`wit crawl`): a home page linking to every page, robots.txt, and
# crawler traps that only the crawler's scope rules and budgets keep finite.
ROBOTS_TXT = b"User-agent: *\nDisallow: /private/\nDisallow: /cgi-bin/\n"
TRAP_PREFIXES = ("/calendar/", "/farm/", "/private/")
FARM_SIZE = 100_000  # link farm pages /farm/0 … /farm/99999, each linking to FARM_LINKS others
FARM_LINKS = 8

_CHARSET_RE = re.compile(rb"""<meta[^>]*charset=["']?([A-Za-z0-9_\-]+)""", re.IGNORECASE)


class _Handler(SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet logs
        pass

    def guess_type(self, path):
        ctype = super().guess_type(path)
        if str(path).endswith(".html"):
            try:
                with open(path, "rb") as f:
                    m = _CHARSET_RE.search(f.read(1024))
            except OSError:
                m = None
            return f"text/html; charset={m.group(1).decode().lower() if m else 'utf-8'}"
        return ctype

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    def _dispatch(self, head: bool) -> None:
        parts = urlsplit(self.path)
        with self.server.lock:
            self.server.hits[parts.path] += 1
        if parts.path == "/":
            return self._html(self._home(), head)
        if parts.path == "/robots.txt":
            delay = f"Crawl-delay: {self.server.crawl_delay:g}\n" if self.server.crawl_delay else ""
            body = ROBOTS_TXT + f"{delay}Sitemap: {self._origin()}/sitemap.xml\n".encode()
            return self._send(200, body, "text/plain; charset=utf-8", head)
        if parts.path in ("/sitemap.xml", "/sitemap-pages.xml"):
            return self._send(200, self._sitemap(parts.path), "application/xml", head)
        if parts.path.startswith(TRAP_PREFIXES):
            body = self._trap(parts.path)
            return self._html(body, head) if body is not None else self.send_error(404)
        fault = self.server.faults.get(parts.path)
        if fault is None:
            return super().do_HEAD() if head else super().do_GET()
        try:
            getattr(self, "_fault_" + fault)(parts.path, parse_qs(parts.query), head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    # --- helpers --------------------------------------------------------------------------
    def _file(self, path: str) -> bytes:
        return (Path(self.directory) / path.lstrip("/")).read_bytes()

    def _send(self, status: int, body: bytes, ctype: str, head: bool, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _image(self, path: str, head: bool, extra: dict | None = None, ctype: str | None = None) -> None:
        self._send(200, self._file(path), ctype or self.guess_type(path), head, extra)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _host(self) -> str:
        return (self.headers.get("Host") or self.server.server_address[0]).rsplit(":", 1)[0]

    def _html(self, body: str, head: bool) -> None:
        self._send(200, body.encode(), "text/html; charset=utf-8", head)

    def _sid(self) -> str:  # a new session id on every page: each spelling is a new URL to a naive crawler
        return secrets.token_hex(6)

    def _home(self) -> str:
        """Every page of the sample, then traps, an image, a 404, robots-disallowed and external links."""
        links = [f"/pages/{name}" for name in self.server.pages]
        links += ["/calendar/2024/01", "/farm/0", f"/?sid={self._sid()}", f"/pages/{(self.server.pages or ['x'])[0]}"
                  f"?sid={self._sid()}", "/private/secret.html", "/cgi-bin/search?q=shapes", "/missing.html",
                  "https://example.com/", "mailto:webmaster@example.com", "#top"]
        if self.server.an_image:
            links.append("/" + self.server.an_image)
        return _page("Sample web", links)

    def _origin(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{self.headers.get('Host') or f'{host}:{port}'}"

    def _sitemap(self, path: str) -> bytes:
        """/sitemap.xml: an index naming /sitemap-pages.xml, which lists every page (and one other host's)."""
        origin = self._origin()
        if path == "/sitemap.xml":
            return (f'<?xml version="1.0" encoding="UTF-8"?>\n<sitemapindex xmlns="http://www.sitemaps.org/schemas/'
                    f'sitemap/0.9">\n<sitemap><loc>{origin}/sitemap-pages.xml</loc></sitemap>\n</sitemapindex>\n').encode()
        locs = [f"{origin}/pages/{name}" for name in self.server.pages] + ["https://example.com/elsewhere.html"]
        urls = "".join(f"<url><loc>{html.escape(u)}</loc></url>\n" for u in locs)
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
                f"{urls}</urlset>\n").encode()

    def _trap(self, path: str) -> str | None:
        m = re.fullmatch(r"/calendar/(\d{4})/(\d{2})", path)
        if m:  # an endless calendar: every month links to the next one
            y, mo = int(m.group(1)), int(m.group(2))
            if not 1 <= mo <= 12:
                return None
            ny, nm = (y + 1, 1) if mo == 12 else (y, mo + 1)
            py, pm = (y - 1, 12) if mo == 1 else (y, mo - 1)
            return _page(f"Calendar {y}-{mo:02d}", [f"/calendar/{ny}/{nm:02d}", f"/calendar/{py}/{pm:02d}",
                                                   f"{path}?sid={self._sid()}", "/"])
        m = re.fullmatch(r"/farm/(\d+)", path)
        if m and int(m.group(1)) < FARM_SIZE:  # a link farm: many pages linking to many others
            n = int(m.group(1))
            return _page(f"Farm {n}", [f"/farm/{(n * 7919 + i * 104729) % FARM_SIZE}" for i in range(1, FARM_LINKS + 1)]
                         + [f"{path}?sid={self._sid()}"])
        if path == "/private/secret.html":  # robots.txt disallows /private/: a polite crawler never gets here
            return _page("Private", ["/private/more.html"])
        return None

    # --- faults ---------------------------------------------------------------------------
    def _fault_http_404(self, path, q, head):
        self.send_error(404)

    def _fault_http_500_once(self, path, q, head):
        with self.server.lock:
            first = path not in self.server.failed_once
            self.server.failed_once.add(path)
        if first:
            self._send(500, b"Internal Server Error\n", "text/plain", head)
        else:
            self._image(path, head)

    def _fault_slow_first_byte(self, path, q, head):
        if not self.server.stopping.wait(SLOW_FIRST_BYTE_S):
            self._image(path, head)

    def _fault_slow_drip(self, path, q, head):
        body = self._file(path)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        self.wfile.flush()
        for i in range(min(len(body), int(DRIP_FOR_S / DRIP_EVERY_S))):
            self.wfile.write(body[i:i + 1])
            self.wfile.flush()
            if self.server.stopping.wait(DRIP_EVERY_S):
                break
        self.close_connection = True

    def _fault_truncated(self, path, q, head):
        body = self._file(path)
        self._send(200, body[: len(body) // 2], self.guess_type(path), head)

    def _fault_html_not_image(self, path, q, head):
        self._send(200, HTML_BODY, "image/jpeg", head)

    def _fault_wrong_content_type(self, path, q, head):
        self._image(path, head, ctype="text/plain")

    def _fault_redirect_chain(self, path, q, head):
        hop = int((q.get("hop") or ["0"])[0])
        if hop < REDIRECT_HOPS:
            self._redirect(f"{path}?hop={hop + 1}")
        else:
            self._image(path, head)

    def _fault_redirect_loop(self, path, q, head):
        self._redirect(path if q.get("loop") else f"{path}?loop=1")

    def _fault_redirect_other_port(self, path, q, head):
        self._redirect(f"http://{self._host()}:{self.server.server_address[1] + 1}{path}")

    def _fault_redirect_private(self, path, q, head):
        self._redirect(PRIVATE_TARGET + path)

    def _fault_redirect_file(self, path, q, head):
        self._redirect(FILE_TARGET)

    def _fault_noai(self, path, q, head):
        self._image(path, head, extra={"X-Robots-Tag": "noai"})

    def _fault_bomb(self, path, q, head):
        self._send(200, self._file(BOMB_FILE), "image/png", head)

    def _fault_huge_body(self, path, q, head):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        declare = sum(map(ord, path)) % 2 == 0  # half declare their length, half just stream
        if declare:
            self.send_header("Content-Length", str(HUGE_BODY_BYTES))
        self.end_headers()
        self.close_connection = True
        if head:
            return
        self.wfile.write(b"\xff\xd8\xff\xe0")  # looks like a JPEG, then goes on and on
        chunk = bytes(64 * 1024)
        left = HUGE_BODY_BYTES - 4
        while left > 0 and not self.server.stopping.is_set():
            self.wfile.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)


def _page(title: str, links: list[str]) -> str:
    items = "\n".join(f'<li><a href="{html.escape(h)}">{html.escape(h)}</a></li>' for h in links)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1><ul>\n{items}\n</ul></body></html>\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many download threads connect at once

    def __init__(self, addr, handler, faults: dict[str, str], site: Path | None = None):
        self.faults = faults
        self.hits: Counter = Counter()  # requests by path (tests check what a crawler asked for)
        pages = site / "pages" if site is not None else None
        self.pages = sorted(p.name for p in pages.glob("*.html")) if pages is not None and pages.is_dir() else []
        images = sorted(p for p in site.glob("img/**/*") if p.is_file()) if site is not None else []
        self.an_image = images[0].relative_to(site).as_posix() if images else None
        self.failed_once: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        super().__init__(addr, handler)


class SampleWebServer:
    """Serve a sample web's ``site/`` folder (threaded); a context manager.

    >>> with SampleWebServer("wit_out/sample/site", port=0) as srv:
    ...     requests.get(srv.url + "/pages/0000000.html")
    """

    def __init__(self, site_dir: str | Path, host: str = "127.0.0.1", port: int = 0, crawl_delay: float = 0.0):
        """``crawl_delay``: a Crawl-delay for robots.txt (none by default: like most hosts, and a polite download
        of the whole one-host sample would otherwise take an hour; the crawl tests ask for one)."""
        site = Path(site_dir)
        if (site / "site").is_dir():  # the sample folder itself was given
            site = site / "site"
        if not site.is_dir():
            raise UserError(f"sample site folder not found: {site_dir} (run `wit sample` first)")
        faults_file = site / "faults.json"
        faults = json.loads(faults_file.read_text()) if faults_file.exists() else {}
        self.site_dir = site
        self.host = host
        try:
            self._server = _Server((host, port), partial(_Handler, directory=str(site)), faults, site)
            self._server.crawl_delay = crawl_delay
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def faults(self) -> dict[str, str]:
        return dict(self._server.faults)

    @property
    def hits(self) -> dict[str, int]:
        """Requests served so far, by URL path."""
        with self._server.lock:
            return dict(self._server.hits)

    def start(self) -> SampleWebServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"sample-web-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C (``wit serve``)."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.stopping.set()
            self._server.server_close()

    def stop(self) -> None:
        self._server.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> SampleWebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
