"""robots.txt parsers on the conformance table, and their speed, same run: ours (pipeline/fetch/robots_rules.py)
vs protego (Scrapy's parser, the maintained one issue 30 asked to prefer) vs the standard library's
urllib.robotparser (what the fetcher used before).

Conformance: every row of tests/test_robots_rfc9309.py (RFC 9309's examples, Google's documented rules and
reference tests), asked of each parser through its own API; a parser that is not installed is skipped.
Speed: allowed-checks per second on a 200-rule robots.txt and 20,000 URLs (quick: 2,000), parse excluded.

  python -m bench robots [--quick]
"""

from __future__ import annotations

import json
import sys
import time
import urllib.robotparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.fetch.robots_rules import RobotsRules  # noqa: E402
from tests.test_robots_rfc9309 import GOOGLE_FISH, TABLE  # noqa: E402


def _cases() -> list[tuple[str, str, str, bool, str]]:
    rows = [r for r in TABLE if r[1] is not None]
    for pattern, matches, misses in GOOGLE_FISH:
        body = f"User-agent: *\nDisallow: {pattern}\n"
        rows += [(body, "FooBot", p, False, f"Google path table {pattern}") for p in matches]
        rows += [(body, "FooBot", p, True, f"Google path table {pattern}") for p in misses]
    return rows


def _absolute(url: str) -> str:
    return url if "://" in url else "http://example.com" + (url if url.startswith("/") else "/" + url)


def _ours(body: str):
    rules = RobotsRules.parse(body.encode("utf-8"))
    return lambda agent, url: rules.allowed(agent, url)


def _protego(body: str):
    from protego import Protego

    rules = Protego.parse(body)
    return lambda agent, url: rules.can_fetch(_absolute(url), agent)


def _stdlib(body: str):
    rp = urllib.robotparser.RobotFileParser()
    rp.parse(body.splitlines())
    return lambda agent, url: rp.can_fetch(agent, _absolute(url))


PARSERS = {"ours": _ours, "protego": _protego, "urllib.robotparser": _stdlib}


def main(quick: bool = False) -> dict:
    cases = _cases()
    n_urls = 2_000 if quick else 20_000
    body = "User-agent: *\n" + "".join(f"Disallow: /dir{i}/*.php$\nAllow: /dir{i}/public/\n" for i in range(100))
    urls = [f"https://example.com/dir{i % 150}/sub/page{i}.html?x={i}" for i in range(n_urls)]
    results: dict = {"rows": len(cases), "urls": n_urls, "parsers": {}}
    for name, make in PARSERS.items():
        try:
            make("")
        except ImportError:
            print(f"{name}: not installed, skipped")
            continue
        failed = []
        for rb, agent, url, expected, source in cases:
            try:
                got = make(rb)(agent, url)
            except Exception as e:  # noqa: BLE001 — a parser that raises fails the row
                got = f"{type(e).__name__}"
            if got is not expected:
                failed.append(f"{source}: {agent} {url} → {got}, expected {expected}")
        check = make(body)
        t0 = time.perf_counter()
        for u in urls:
            check("wit-builder/0.1", u)
        rate = n_urls / (time.perf_counter() - t0)
        results["parsers"][name] = {"failed": len(failed), "passed": len(cases) - len(failed),
                                    "checks_per_s": round(rate), "failed_rows": failed}
        print(f"{name:20s} {len(cases) - len(failed):4d}/{len(cases)} rows  {rate:10,.0f} checks/s")
        for f in failed[:12]:
            print(f"    {f}")
    out = ROOT / "bench" / "results" / "robots.json"
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results


if __name__ == "__main__":
    main("--quick" in sys.argv)
