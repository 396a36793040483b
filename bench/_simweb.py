"""A simulated web on this machine, for the download and end-to-end benchmarks: many hosts, each on its own
127.x.y.z address and with its own name, and the trouble the real web has.

- "healthy" hosts answer at once; "slow" ones after a per-host delay (0.3–1.5 s);
- "dead" hosts never take a connection (a listening socket nobody accepts on: connects hang);
- "tarpit" hosts have names whose DNS queries are never answered;
- "ratelimit" hosts allow RATE requests/s (burst BURST) and answer 429 + Retry-After: 1 beyond that.

One process serves every host (asyncio) and every name (pipeline.sample_web.dns_server.DnsServer),
counts per host the requests, the answers, the most connections open at once and the most requests
being answered at once, and writes them to a JSON file when stopped. Only 127.0.0.0/8 is used.

Every path is an image (one of 16 small JPEGs), except robots.txt and tdmrep.json (404: everything
allowed) and, when SimWeb is given ``pages`` (host → {path: HTML}, bench/e2e.py's), those HTML pages and
each host's home page ``/`` linking them, so `wit crawl` can start from the home pages.

    hosts = plan_web(2000, seed=0)
    urls = make_urls(hosts, 100_000, port)
    with SimWeb(hosts, port, workdir) as web:   # a fresh process each time: counters start over
        ... fetch, with download.dns_servers = [web.dns] ...
    web.stats   # per host name: requests, ok, too_many, most_open

img2dataset resolves names with the C library, which cannot be pointed at a DNS server on another
port than 53. ``glibc_like_env`` gives its processes a ``sitecustomize`` that sends getaddrinfo for
*.sim.test names to this server the way glibc does by default (resolv.conf timeout:5 attempts:2:
a name that gets no answer fails after 10 s, and nothing is cached).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DOMAIN = "sim.test"
RATE, BURST = 4.0, 4.0
KINDS = ("healthy", "slow", "dead", "tarpit", "ratelimit")


def host_ip(i: int) -> str:
    return f"127.{20 + i // 62_500}.{(i // 250) % 250}.{i % 250 + 1}"


def plan_web(n_hosts: int, seed: int = 0, dead: float = 0.05, tarpit: float = 0.02, ratelimit: float = 0.05,
             slow: float = 0.05) -> list[dict]:
    """The hosts: name, address, kind and (slow ones) delay, in a seeded random mix."""
    rng = random.Random(seed)
    kinds = (["dead"] * round(n_hosts * dead) + ["tarpit"] * round(n_hosts * tarpit)
             + ["ratelimit"] * round(n_hosts * ratelimit) + ["slow"] * round(n_hosts * slow))
    kinds += ["healthy"] * (n_hosts - len(kinds))
    rng.shuffle(kinds)
    return [{"name": f"h{i:05d}.{DOMAIN}", "ip": host_ip(i), "kind": k,
             "delay": round(rng.uniform(0.3, 1.5), 2) if k == "slow" else 0.0} for i, k in enumerate(kinds)]


def make_urls(hosts: list[dict], n_images: int, port: int, seed: int = 0, page: tuple[int, int] = (4, 16)) -> list[dict]:
    """``n_images`` image URLs in pages: runs of 4–16 images of one host (a page's images sit together in
    extracted data), the pages' hosts drawn at random."""
    rng = random.Random(seed + 1)
    out: list[dict] = []
    while len(out) < n_images:
        h = hosts[rng.randrange(len(hosts))]
        for _ in range(min(rng.randint(*page), n_images - len(out))):
            out.append({"url": f"http://{h['name']}:{port}/i/{len(out)}.jpg", "host": h["name"], "kind": h["kind"]})
    return out


def free_port() -> int:
    """A port free on the first hosts' addresses (every host listens on the same port)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host_ip(0), 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind((host_ip(1), port))
                b.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


# --- the server process ---------------------------------------------------------------------------


def _images(n: int = 16) -> list[bytes]:
    import io

    from PIL import Image

    out = []
    for k in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (k * 15 % 256, 255 - k * 9 % 256, 90)).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


class _HostState:
    def __init__(self, h: dict):
        self.kind, self.delay = h["kind"], h["delay"]
        self.open = self.most_open = self.busy = self.most_busy = self.requests = self.ok = self.too_many = 0
        self.pages_served = 0
        self.pages: dict[bytes, bytes] = {}
        self.tokens, self.last = BURST, time.monotonic()

    def take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(BURST, self.tokens + (now - self.last) * RATE)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class _Http(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, one request at a time per connection (no client here pipelines)."""

    def __init__(self, st: _HostState, images: list[bytes]):
        self.st, self.images = st, images
        self.buf, self.busy, self.tr = b"", False, None

    def connection_made(self, tr):
        self.tr = tr
        self.st.open += 1
        self.st.most_open = max(self.st.most_open, self.st.open)

    def connection_lost(self, exc):
        self.st.open -= 1

    def data_received(self, data):
        self.buf += data
        self._next()

    def _next(self):
        if self.busy or b"\r\n\r\n" not in self.buf:
            return
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1] if len(parts) == 3 else b"/"
        close = parts[-1] == b"HTTP/1.0" or any(
            line.lower().startswith(b"connection:") and b"close" in line.lower() for line in lines[1:])
        self.st.requests += 1
        self.st.busy += 1
        self.st.most_busy = max(self.st.most_busy, self.st.busy)
        self.busy = True
        if self.st.delay:
            asyncio.get_running_loop().call_later(self.st.delay, self._answer, path, close)
        else:
            self._answer(path, close)

    def _answer(self, path: bytes, close: bool):
        self.busy = False
        self.st.busy -= 1
        if self.tr.is_closing():
            return
        if self.st.kind == "ratelimit" and not self.st.take_token():
            self.st.too_many += 1
            status, extra, body = b"429 Too Many Requests", b"Retry-After: 1\r\n", b""
        elif path in (b"/robots.txt", b"/.well-known/tdmrep.json"):  # no consent files: everything allowed
            status, extra, body = b"404 Not Found", b"", b""
        elif path in self.st.pages:
            self.st.ok += 1
            self.st.pages_served += 1
            status, extra, body = b"200 OK", b"Content-Type: text/html; charset=utf-8\r\n", self.st.pages[path]
        else:
            self.st.ok += 1
            status, extra, body = b"200 OK", b"Content-Type: image/jpeg\r\n", self.images[hash(path) % len(self.images)]
        self.tr.write(b"HTTP/1.1 " + status + b"\r\n" + extra + b"Content-Length: " + str(len(body)).encode()
                      + (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n" + body)
        if close:
            self.tr.close()
        else:
            self._next()


def home_page(name: str, paths: list[str]) -> bytes:
    """A host's home page: a link to each of its pages."""
    links = "".join(f'<li><a href="{p}">page {p}</a></li>' for p in paths)
    return f"<html><head><title>{name}</title></head><body><ul>{links}</ul></body></html>".encode()


async def _serve(hosts: list[dict], port: int, stats_path: str, pages: dict[str, dict[str, str]]) -> None:
    from pipeline.sample_web.dns_server import DnsServer

    loop = asyncio.get_running_loop()
    images = _images()
    states = {h["name"]: _HostState(h) for h in hosts}
    if pages:
        for name, st in states.items():
            own = pages.get(name, {})
            st.pages = {p.encode(): html.encode() for p, html in own.items()}
            st.pages[b"/"] = home_page(name, sorted(own))
    servers, hung = [], []
    for h in hosts:
        if h["kind"] == "dead":
            s = socket.socket()
            s.bind((h["ip"], port))
            s.listen(1)  # never accepted: the first connects wait in the queue, the rest get no SYN-ACK
            hung.append(s)
        elif h["kind"] != "tarpit":
            st = states[h["name"]]
            servers.append(await loop.create_server(lambda st=st: _Http(st, images), h["ip"], port, backlog=512))
    dns = DnsServer({h["name"]: [h["ip"]] for h in hosts if h["kind"] != "tarpit"},
                    tarpit={h["name"] for h in hosts if h["kind"] == "tarpit"}).start()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"ready {dns.address}", flush=True)
    await stop.wait()
    dns.stop()
    stats = {name: {"requests": st.requests, "ok": st.ok, "too_many": st.too_many, "most_open": st.most_open,
                    "most_busy": st.most_busy, "pages": st.pages_served}
             for name, st in states.items()}
    Path(stats_path).write_text(json.dumps(stats))


def _raise_fd_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SimWeb:
    """The simulated web in its own process, for one ``with`` block; ``dns`` is its DNS server's address.
    ``pages``: HTML pages to serve (host name → {path: HTML}), each host's home page linking them."""

    def __init__(self, hosts: list[dict], port: int, workdir: Path, pages: dict[str, dict[str, str]] | None = None):
        self.hosts, self.port, self.workdir, self.pages = hosts, port, Path(workdir), pages or {}
        self.stats: dict[str, dict] = {}
        self.dns = ""

    def __enter__(self) -> SimWeb:
        self.workdir.mkdir(parents=True, exist_ok=True)
        plan = self.workdir / "hosts.json"
        plan.write_text(json.dumps(self.hosts))
        pages = self.workdir / "pages.json"
        pages.write_text(json.dumps(self.pages))
        self._stats = self.workdir / "stats.json"
        self._stats.unlink(missing_ok=True)
        root = Path(__file__).resolve().parent.parent
        self._proc = subprocess.Popen([sys.executable, "-m", "bench._simweb", str(plan), str(self.port), str(self._stats),
                                       str(pages)],
                                      cwd=root, stdout=subprocess.PIPE, text=True)
        line = self._proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self._proc.kill()
            raise RuntimeError("the simulated web did not start")
        self.dns = line[1]
        return self

    def __exit__(self, *exc) -> None:
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(60)
        if self._stats.exists():
            self.stats = json.loads(self._stats.read_text())


_SITECUSTOMIZE = '''
import os, socket
_server = os.environ.get("SIMWEB_DNS")
if _server:
    import dns.exception, dns.nameserver, dns.resolver
    _ip, _port = _server.rsplit(":", 1)
    _r = dns.resolver.Resolver(configure=False)
    _r.nameservers = [dns.nameserver.Do53Nameserver(_ip, int(_port))]
    _r.timeout, _r.lifetime, _r.cache = 5.0, 10.0, None  # glibc: timeout:5 attempts:2, no cache
    _real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if not (isinstance(host, str) and host.endswith(".DOMAIN")):
            return _real(host, port, family, type, proto, flags)
        try:
            answer = _r.resolve(host, "A", search=False)
        except dns.resolver.NXDOMAIN:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        except dns.exception.Timeout:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution") from None
        except dns.exception.DNSException as e:
            raise socket.gaierror(socket.EAI_FAIL, str(e)) from None
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (r.address, port)) for r in answer]

    socket.getaddrinfo = getaddrinfo
'''.replace("DOMAIN", DOMAIN)


def glibc_like_env(dns_address: str, workdir: Path) -> dict[str, str]:
    """Environment for a process (and its children) whose getaddrinfo asks the simulated web's DNS like glibc."""
    d = Path(workdir) / "sitecustomize"
    d.mkdir(parents=True, exist_ok=True)
    (d / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "SIMWEB_DNS": dns_address,
            "PYTHONPATH": os.pathsep.join([str(d), root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


if __name__ == "__main__":
    _raise_fd_limit()
    plan_file, port_arg, stats_file, pages_file = sys.argv[1:5]
    asyncio.run(_serve(json.loads(Path(plan_file).read_text()), int(port_arg), stats_file,
                       json.loads(Path(pages_file).read_text())))
