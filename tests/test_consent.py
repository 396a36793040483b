"""AI-training opt-outs (pipeline/fetch/consent.py): robots.txt AI tokens, TDMRep (file, header, meta),
X-Robots-Tag and robots metas. Header forms are served by a real HTTP server on 127.0.0.1 and read
back through requests/urllib3, as the fetcher reads them."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from pipeline.fetch.consent import (
    AI_TOKENS,
    OPTED_OUT_HEADER,
    OPTED_OUT_META,
    OPTED_OUT_ROBOTS_AI,
    OPTED_OUT_TDMREP,
    TdmRep,
    after_fetch_opt_out,
    before_fetch_opt_out,
    header_opt_out,
    html_metas,
    meta_opt_out,
    page_opt_out,
    robots_ai_opt_out,
    robots_tag_directives,
    tdm_declaration,
    tdmrep_opt_out,
)
from pipeline.fetch.robots_rules import RobotsRules

UA = "wit-builder/0.1 (+https://github.com/wit-builder/wit-builder)"

# path → list of (header, value) the server answers with; several entries of one header are sent apart
ROUTES: dict[str, list[tuple[str, str]]] = {
    "/plain": [],
    "/noai": [("X-Robots-Tag", "noai")],
    "/noimageai-list": [("X-Robots-Tag", "noindex, noimageai")],
    "/two-headers": [("X-Robots-Tag", "googlebot: nofollow"), ("X-Robots-Tag", "noai")],
    "/other-bot": [("X-Robots-Tag", "otherbot: noai, noimageai")],
    "/other-bot-then-all": [("X-Robots-Tag", "otherbot: noindex"), ("X-Robots-Tag", "noimageai")],
    "/our-bot": [("X-Robots-Tag", "wit-builder: noai")],
    "/ai-bot": [("X-Robots-Tag", "GPTBot: noimageai")],
    "/scoped-in-one": [("X-Robots-Tag", "otherbot: noindex, ccbot: noai")],
    "/noindex-only": [("X-Robots-Tag", "noindex, nofollow")],
    "/unavailable": [("X-Robots-Tag", "unavailable_after: Wednesday, 03-Nov-2021 15:00:00 GMT, noai")],
    "/tdm-1": [("tdm-reservation", "1"), ("tdm-policy", "https://p.example/policy.json")],
    "/tdm-0": [("tdm-reservation", "0")],
    "/tdm-bad": [("tdm-reservation", "yes")],
    "/.well-known/tdmrep.json": [("Content-Type", "application/json")],
}
TDMREP_JSON = json.dumps([
    {"location": "/directory-a/", "tdm-reservation": 1},
    {"location": "/directory-b/html/", "tdm-reservation": 1, "tdm-policy": "https://provider.example/policy.json"},
    {"location": "/directory-b/images/*.jpg", "tdm-reservation": 0},
    {"location": "/directory-b/", "tdm-reservation": 1},
    {"location": "/exact$", "tdm-reservation": 1},
    {"location": "/caf%C3%A9/", "tdm-reservation": 1},
]).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 — http.server's name
        headers = ROUTES.get(self.path)
        if headers is None:
            self.send_error(404)
            return
        body = TDMREP_JSON if self.path.endswith("tdmrep.json") else b"x"
        self.send_response(200)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _get(server: str, path: str) -> requests.Response:
    r = requests.get(server + path, timeout=10)
    r.raise_for_status()
    return r


HEADER_CASES = [
    ("/plain", None), ("/noai", OPTED_OUT_HEADER), ("/noimageai-list", OPTED_OUT_HEADER),
    ("/two-headers", OPTED_OUT_HEADER), ("/other-bot", None), ("/other-bot-then-all", OPTED_OUT_HEADER),
    ("/our-bot", OPTED_OUT_HEADER), ("/ai-bot", OPTED_OUT_HEADER), ("/scoped-in-one", OPTED_OUT_HEADER),
    ("/noindex-only", None), ("/unavailable", OPTED_OUT_HEADER),
]


@pytest.mark.parametrize("path,expected", HEADER_CASES)
def test_x_robots_tag_forms_over_http(server, path, expected):
    r = _get(server, path)
    # urllib3 keeps repeated headers apart (what the fetcher passes); so do (name, value) pairs
    assert header_opt_out(r.raw.headers, UA) == expected
    assert header_opt_out(list(r.raw.headers.items()), UA) == expected
    with urllib.request.urlopen(server + path, timeout=10) as resp:  # http.client's message, get_all()
        assert header_opt_out(resp.headers, UA) == expected
    # requests joins them with ", ", and then a scoped header's token carries into the next header's
    # directives ("googlebot: nofollow, noai"): the one form whose answer differs
    joined_differs = path in ("/two-headers", "/other-bot-then-all")
    assert (header_opt_out(r.headers, UA) == expected) is not joined_differs


def test_x_robots_tag_configurable_directives(server):
    """img2dataset's list (noindex, noimageindex too) can be asked for; a scope still applies."""
    img2dataset = {"noai", "noimageai", "noindex", "noimageindex"}
    assert header_opt_out(_get(server, "/noindex-only").raw.headers, UA, directives=img2dataset) == OPTED_OUT_HEADER
    assert header_opt_out(_get(server, "/other-bot").raw.headers, UA, directives=img2dataset) is None
    assert header_opt_out({"X-Robots-Tag": "none"}, UA, directives=img2dataset) == OPTED_OUT_HEADER  # none = noindex…
    assert header_opt_out({"X-Robots-Tag": "none"}, UA) is None  # … which is no AI directive


def test_x_robots_tag_scope_only_for_our_or_ai_tokens():
    assert header_opt_out({"X-Robots-Tag": "ccbot: noai"}, UA) == OPTED_OUT_HEADER
    assert header_opt_out({"X-Robots-Tag": "ccbot: noai"}, UA, tokens=()) is None
    assert header_opt_out({"x-robots-tag": "WIT-BUILDER: NOAI"}, UA, tokens=()) == OPTED_OUT_HEADER
    assert header_opt_out({"X-Robots-Tag": "wit: noai"}, UA, tokens=()) is None  # whole token only
    assert header_opt_out(None, UA) is None


@pytest.mark.parametrize("value,pairs", [
    ("noai", [(None, "noai")]),
    ("noindex, nofollow", [(None, "noindex"), (None, "nofollow")]),
    ("otherbot: noindex, nofollow", [("otherbot", "noindex"), ("otherbot", "nofollow")]),
    ("googlebot: unavailable_after: 25 Jun 2010 15:00:00 PST", [("googlebot", "unavailable_after")]),
    ("max-image-preview:large, noai", [(None, "max-image-preview"), (None, "noai")]),
    ("a: noai, b: noimageai", [("a", "noai"), ("b", "noimageai")]),
    ("noai noimageai", [(None, "noai"), (None, "noimageai")]),
    ("", []),
])
def test_robots_tag_directives(value, pairs):
    assert robots_tag_directives(value) == pairs


def test_tdm_header_over_http(server):
    assert tdmrep_opt_out("/tdm-1", headers=_get(server, "/tdm-1").raw.headers) == OPTED_OUT_TDMREP
    assert tdm_declaration("/tdm-1", headers=_get(server, "/tdm-1").headers) == (1, "https://p.example/policy.json")
    assert tdmrep_opt_out("/tdm-0", headers=_get(server, "/tdm-0").raw.headers) is None
    assert tdm_declaration("/tdm-bad", headers=_get(server, "/tdm-bad").raw.headers) == (None, None)  # unset


def test_tdmrep_json_from_well_known(server):
    tdm = TdmRep.parse(_get(server, "/.well-known/tdmrep.json").content)
    assert tdm.error is None and len(tdm.rules) == 6
    assert tdm.declaration("/directory-a/doc.pdf") == (1, None)
    assert tdm.declaration(server + "/directory-b/html/page.html") == (1, "https://provider.example/policy.json")
    assert tdm.declaration("/directory-b/images/photo.jpg") == (0, None)
    assert tdm.declaration("/directory-b/images/photo.png") == (1, None)  # the first match in sequence
    assert tdm.declaration("/elsewhere") == (None, None)
    assert tdm.declaration("/exact") == (1, None) and tdm.declaration("/exact/x") == (None, None)
    assert tdm.declaration("/café/x") == (1, None)  # percent-encoding as robots.txt
    assert tdmrep_opt_out("/directory-a/x", tdmrep=tdm) == OPTED_OUT_TDMREP
    assert tdmrep_opt_out("/directory-b/images/photo.jpg", tdmrep=tdm) is None
    assert TdmRep.from_bytes(tdm.to_bytes()).declaration("/directory-a/") == (1, None)


def test_tdmrep_precedence_file_then_header_then_meta():
    tdm = TdmRep.parse(b'[{"location": "/", "tdm-reservation": 1}]')
    assert tdmrep_opt_out("/a", tdm) == OPTED_OUT_TDMREP
    assert tdmrep_opt_out("/a", tdm, headers={"tdm-reservation": "0"}) is None  # the header supersedes the file
    assert tdmrep_opt_out("/a", tdm, headers={"tdm-reservation": "0"},
                          metas=[("tdm-reservation", "1")]) == OPTED_OUT_TDMREP  # the meta supersedes both
    assert tdmrep_opt_out("/a", None, headers={"tdm-reservation": "1"}, metas=[("TDM-Reservation", "0")]) is None
    assert tdm_declaration("/", metas=[("tdm-reservation", "1"), ("tdm-policy", "https://x.example/p")]) == \
        (1, "https://x.example/p")


@pytest.mark.parametrize("body,error", [
    (b"not json", "not JSON"), (b'{"location": "/"}', "not an array"),
    (b'[{"location": "nope", "tdm-reservation": 1}]', "no rule with a usable location"), (b"\xff\xfe", "not JSON"),
])
def test_tdmrep_bad_files_mean_no_rules(body, error):
    tdm = TdmRep.parse(body)
    assert tdm.rules == [] and error in tdm.error
    assert tdmrep_opt_out("/x", tdm) is None


def test_tdmrep_odd_rule_values():
    tdm = TdmRep.parse(b'\xef\xbb\xbf[{"location": "/a", "tdm-reservation": "1"}, {"location": "/b", '
                       b'"tdm-reservation": 2}, {"location": "/c", "tdm-reservation": true}, "junk", '
                       b'{"tdm-reservation": 1}, {"location": "/d", "tdm-reservation": 1.0}]')
    assert [tdm.declaration(p)[0] for p in ("/a", "/b", "/c", "/d")] == [1, None, None, 1]


def test_robots_ai_tokens():
    rules = RobotsRules.parse("User-agent: *\nDisallow: /private/\n\nUser-agent: GPTBot\nUser-agent: CCBot\n"
                              "Disallow: /images/\n\nUser-agent: Google-Extended\nDisallow: /\nAllow: /public/\n")
    assert robots_ai_opt_out(rules, "https://e.example/images/a.jpg") == OPTED_OUT_ROBOTS_AI
    assert robots_ai_opt_out(rules, "https://e.example/text/a.jpg") == OPTED_OUT_ROBOTS_AI  # Google-Extended
    assert robots_ai_opt_out(rules, "https://e.example/public/a.jpg") is None
    assert robots_ai_opt_out(rules, "https://e.example/private/a.jpg", tokens=["ClaudeBot"]) is None  # * only
    star_only = RobotsRules.parse("User-agent: *\nDisallow: /\n")
    assert robots_ai_opt_out(star_only, "/x") is None
    assert robots_ai_opt_out(RobotsRules.parse("User-agent: ccbot/2.0\nDisallow: /\n"), "/x") == OPTED_OUT_ROBOTS_AI
    assert robots_ai_opt_out(RobotsRules.parse("User-agent: bot\nDisallow: /\n"), "/x") is None
    assert {"CCBot", "GPTBot", "Google-Extended", "ClaudeBot", "anthropic-ai", "Applebot-Extended",
            "meta-externalagent", "Bytespider", "PerplexityBot", "cohere-ai"} <= set(AI_TOKENS)


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>{metas}</head>
<body><meta name="robots" content="noai"><img src="a.jpg" alt="a"></body></html>"""


@pytest.mark.parametrize("metas,expected", [
    ('<meta name="robots" content="noai">', OPTED_OUT_META),
    ('<META NAME="Robots" CONTENT="index, NoImageAI">', OPTED_OUT_META),
    ('<meta name="robots" content="noindex, nofollow">', None),
    ('<meta name="CCBot" content="noai">', OPTED_OUT_META),
    ('<meta name="otherbot" content="noai">', None),
    ('<meta name="wit-builder" content="noimageai">', OPTED_OUT_META),
    ('<meta name="tdm-reservation" content="1">', OPTED_OUT_TDMREP),
    ('<meta name="tdm-reservation" content="0"><meta name="robots" content="noai">', OPTED_OUT_META),
    ('<meta property="robots" content="noai">', None),
    ("", None),  # the body's meta is not the head's
])
def test_page_metas(metas, expected):
    page = PAGE.format(metas=metas)
    assert page_opt_out(html_metas(page), user_agent=UA) == expected
    assert page_opt_out(html_metas(page.encode()), user_agent=UA) == expected


def test_page_signal_order():
    metas = [("robots", "noai"), ("tdm-reservation", "1")]
    assert page_opt_out(metas, {"X-Robots-Tag": "noai"}) == OPTED_OUT_TDMREP
    assert page_opt_out([("robots", "noai")], {"X-Robots-Tag": "noai"}) == OPTED_OUT_HEADER
    assert meta_opt_out([(None, None), ("robots", None)]) is None
    assert html_metas("<meta name=robots content=noai><p>no head</p>") == [("robots", "noai")]
    assert html_metas("<head><meta name='x'") == []


def test_fetch_path_helpers(server):
    rules = RobotsRules.parse("User-agent: GPTBot\nDisallow: /private/\n")
    tdm = TdmRep.parse(_get(server, "/.well-known/tdmrep.json").content)
    assert before_fetch_opt_out("/private/a.jpg", rules, tdm) == OPTED_OUT_ROBOTS_AI
    assert before_fetch_opt_out("/directory-a/a.jpg", rules, tdm) == OPTED_OUT_TDMREP
    assert before_fetch_opt_out("/directory-b/images/a.jpg", rules, tdm) is None
    assert before_fetch_opt_out("/x") is None
    assert after_fetch_opt_out(_get(server, "/tdm-1").raw.headers, "/tdm-1", UA) == OPTED_OUT_TDMREP
    assert after_fetch_opt_out(_get(server, "/two-headers").raw.headers, "/two-headers", UA) == OPTED_OUT_HEADER
    assert after_fetch_opt_out(_get(server, "/plain").raw.headers, "/plain", UA) is None
