"""robots.txt conformance: RFC 9309's text and examples, Google's documented semantics ("How Google
interprets the robots.txt specification": URL matching based on path values, order of precedence,
grouping of lines and rules) and Google's reference tests (robots_test.cc, robotstxt-spec-test), every
row asserted. Where RFC 9309 and Google's tests disagree, the RFC row is kept (marked "RFC over Google").

`python -m bench robots` asks protego and urllib.robotparser the same rows (bench/results/robots.json).
"""

from __future__ import annotations

import pytest

from pipeline.fetch.robots_rules import MAX_BYTES, RobotsRules, normalise, product_token, url_path

FOO = "FooBot"
GOOGLE_FISH = [  # Google: "URL matching based on path values"
    ("/", ["/", "/fish", "/a/b?c"], []),
    ("/*", ["/", "/fish", "/a/b?c"], []),
    ("/$", ["/"], ["/fish", "/?a=b"]),
    ("/fish", ["/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fishheads/yummy.html",
               "/fish.php?id=anything"], ["/Fish.asp", "/catfish", "/?id=fish", "/desert/fish"]),
    ("/fish*", ["/fish", "/fish.html", "/fish/salmon.html", "/fishheads", "/fishheads/yummy.html",
                "/fish.php?id=anything"], ["/Fish.asp", "/catfish", "/?id=fish", "/desert/fish"]),
    ("/fish/", ["/fish/", "/fish/?id=anything", "/fish/salmon.htm"],
     ["/fish", "/fish.html", "/animals/fish/", "/Fish/Salmon.asp"]),
    ("/*.php", ["/index.php", "/filename.php", "/folder/filename.php", "/folder/filename.php?parameters",
                "/folder/any.php.file.html", "/filename.php/"], ["/", "/windows.PHP"]),
    ("/*.php$", ["/filename.php", "/folder/filename.php"],
     ["/filename.php?parameters", "/filename.php/", "/filename.php5", "/windows.PHP"]),
    ("/fish*.php", ["/fish.php", "/fishheads/catfish.php?parameters"], ["/Fish.PHP"]),
]


@pytest.mark.parametrize("pattern,matches,misses", GOOGLE_FISH, ids=[p for p, _, _ in GOOGLE_FISH])
def test_google_path_value_table(pattern, matches, misses):
    rules = RobotsRules.parse(f"User-agent: *\nDisallow: {pattern}\n")
    for path in matches:
        assert not rules.allowed(FOO, path), (pattern, path)
        assert not rules.allowed(FOO, "https://example.com" + path), (pattern, path)
    for path in misses:
        assert rules.allowed(FOO, path), (pattern, path)


RFC_5_1 = """User-Agent: *
Disallow: *.gif$
Disallow: /example/
Allow: /publications/

User-Agent: foobot
Disallow:/
Allow:/example/page.html
Allow:/example/allowed.gif

User-Agent: barbot
User-Agent: bazbot
Disallow: /example/page.html

User-Agent: quxbot

EOF
"""
RFC_5_2 = "User-Agent: foobot\nAllow: /example/page/\nDisallow: /example/page/disallowed.gif\n"
GOOGLE_ALLOW_PHP = "user-agent: FooBot\ndisallow: /\nallow: /*.php\n"
GOOGLE_ALLOW_PHP_END = "user-agent: FooBot\ndisallow: /\nallow: /*.php$\n"

# (robots.txt, agent, url, allowed?, where the row comes from)
TABLE = [
    # --- RFC 9309 §5.1 "Simple Example" and §5.2 "Longest Match"
    (RFC_5_1, "foobot", "http://example.com/example/page.html", True, "RFC 9309 §5.1"),
    (RFC_5_1, "foobot", "http://example.com/example/allowed.gif", True, "RFC 9309 §5.1"),
    (RFC_5_1, "foobot", "http://example.com/example/other.html", False, "RFC 9309 §5.1"),
    (RFC_5_1, "foobot", "http://example.com/publications/", False, "RFC 9309 §5.1: * is not merged in"),
    (RFC_5_1, "barbot", "http://example.com/example/page.html", False, "RFC 9309 §5.1"),
    (RFC_5_1, "bazbot", "http://example.com/example/page.html", False, "RFC 9309 §5.1: two agents, one group"),
    (RFC_5_1, "barbot", "http://example.com/example/other.gif", True, "RFC 9309 §5.1"),
    (RFC_5_1, "quxbot", "http://example.com/example/page.html", True, "RFC 9309 §5.1: an empty group allows"),
    (RFC_5_1, "quxbot", "http://example.com/x.gif", True, "RFC 9309 §5.1"),
    (RFC_5_1, "otherbot", "http://example.com/images/x.gif", False, "RFC 9309 §5.1: *.gif$"),
    (RFC_5_1, "otherbot", "http://example.com/images/x.gif?y", True, "RFC 9309 §5.1: *.gif$"),
    (RFC_5_1, "otherbot", "http://example.com/example/", False, "RFC 9309 §5.1"),
    (RFC_5_1, "otherbot", "http://example.com/publications/a.html", True, "RFC 9309 §5.1"),
    (RFC_5_1, "otherbot", "http://example.com/publications/a.gif", True,
     "RFC 9309 §5.1: Allow /publications/ (14 octets) is longer than *.gif$ (6)"),
    (RFC_5_2, "foobot", "http://example.com/example/page/", True, "RFC 9309 §5.2"),
    (RFC_5_2, "foobot", "http://example.com/example/page/other.gif", True, "RFC 9309 §5.2"),
    (RFC_5_2, "foobot", "http://example.com/example/page/disallowed.gif", False, "RFC 9309 §5.2"),
    # --- robotstxt-spec-test matching-path-values-2: Allow patterns under Disallow: /
    *[(GOOGLE_ALLOW_PHP, FOO, "http://foo.bar" + p, ok, "matching-path-values-2 allow /*.php") for p, ok in (
        ("/bar", False), ("/filename.php", True), ("/folder/filename.php", True),
        ("/folder/filename.php?parameters", True), ("//folder/any.php.file.html", True), ("/filename.php/", True),
        ("/index?f=filename.php/", True), ("/php/", False), ("/index?php", False), ("/windows.PHP", False))],
    *[(GOOGLE_ALLOW_PHP_END, FOO, "http://foo.bar" + p, ok, "matching-path-values-2 allow /*.php$") for p, ok in (
        ("/bar", False), ("/filename.php", True), ("/folder/filename.php", True), ("/filename.php?parameters", False),
        ("/filename.php/", False), ("/filename.php5", False), ("/php/", False), ("/filename?php", False),
        ("/aaaphpaaa", False), ("//windows.PHP", False))],
    # --- RFC 9309 §2.2.2 / Google "order of precedence": longest match wins, Allow wins a tie
    ("User-agent: *\nAllow: /p\nDisallow: /\n", FOO, "http://example.com/page", True, "Google precedence 1"),
    ("User-agent: *\nAllow: /folder\nDisallow: /folder\n", FOO, "http://example.com/folder/page", True,
     "Google precedence 2 (tie → allow)"),
    ("User-agent: *\nAllow: /page\nDisallow: /*.htm\n", FOO, "http://example.com/page.htm", False,
     "Google precedence 3 (longer pattern)"),
    ("User-agent: *\nAllow: /page\nDisallow: /*.ph\n", FOO, "http://example.com/page.php5", True,
     "Google precedence 4 (equal length → allow)"),
    ("User-agent: *\nAllow: /$\nDisallow: /\n", FOO, "http://example.com/", True, "Google precedence 5"),
    ("User-agent: *\nAllow: /$\nDisallow: /\n", FOO, "http://example.com/page.htm", False, "Google precedence 6"),
    ("User-agent: FooBot\nDisallow: /\nAllow: /images/\n", FOO, "/images/a.jpg", True,
     "issue 30: Disallow / then Allow /images/ (first-match parsers refuse it; protego passes)"),
    ("User-agent: FooBot\nDisallow: /\nAllow: /images/\n", FOO, "/about", False, "issue 30"),
    ("user-agent: FooBot\ndisallow: /x/page.html\nallow: /x/page.html\n", FOO, "http://foo.bar/x/page.html", True,
     "robots_test ID_LongestMatch"),
    ("user-agent: FooBot\nallow: /page\ndisallow: /*.html\n", FOO, "http://foo.bar/page.html", False,
     "robots_test ID_LongestMatch"),
    ("user-agent: FooBot\nallow: /page\ndisallow: /*.html\n", FOO, "http://foo.bar/page", True,
     "robots_test ID_LongestMatch"),
    ("user-agent: FooBot\nallow: /x/page.\ndisallow: /*.html\n", FOO, "http://foo.bar/x/page.html", True,
     "robots_test ID_LongestMatch"),
    ("user-agent: FooBot\nallow: /x/page.\ndisallow: /*.html\n", FOO, "http://foo.bar/x/y.html", False,
     "robots_test ID_LongestMatch"),
    ("user-agent: FooBot\ndisallow: \nallow: \n", FOO, "http://foo.bar/x/page.html", True,
     "RFC 9309 §2.2.2: empty rules allow"),
    ("user-agent: FooBot\ndisallow:\n", FOO, "/anything", True, "empty Disallow allows"),
    ("user-agent: FooBot\ndisallow: /\nallow: /\n", FOO, "http://foo.bar/x", True, "tie → allow"),
    ("user-agent: FooBot\ndisallow: /x\nallow: /x/\n", FOO, "http://foo.bar/x", False, "robots_test"),
    ("user-agent: FooBot\ndisallow: /x\nallow: /x/\n", FOO, "http://foo.bar/x/", True, "robots_test"),
    # --- RFC 9309 §2.2.3 special characters, robots_test ID_SpecialCharacters
    ("User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n", FOO, "http://foo.bar/foo/bar/quz", False,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n", FOO, "http://foo.bar/foo/quz", True,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n", FOO, "http://foo.bar/foo//quz", True,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n", FOO, "http://foo.bar/foo/bax/quz", True,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", FOO, "http://foo.bar/foo/bar", False,
     "ID_SpecialCharacters: $ anchors"),
    ("User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", FOO, "http://foo.bar/foo/bar/qux", True,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", FOO, "http://foo.bar/foo/bar/", True,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n", FOO, "http://foo.bar/foo/bar/baz", True,
     "ID_SpecialCharacters"),
    ("User-agent: FooBot\n# Disallow: /\nDisallow: /foo/quz#qux\nAllow: /\n", FOO, "http://foo.bar/foo/bar", True,
     "RFC 9309 §2.2.3: # starts a comment"),
    ("User-agent: FooBot\n# Disallow: /\nDisallow: /foo/quz#qux\nAllow: /\n", FOO, "http://foo.bar/foo/quz", False,
     "RFC 9309 §2.2.3"),
    ("User-agent: *\nDisallow: /*.jpg$\n", FOO, "/a/b.jpg", False, "issue 30: Disallow /*.jpg$"),
    ("User-agent: *\nDisallow: /*.jpg$\n", FOO, "/a/b.jpg?x=1", True, "$ anchors at the end of path+query"),
    ("User-agent: *\nDisallow: /*.jpg$\n", FOO, "/a/b.jpeg", True, "$"),
    ("User-agent: *\nDisallow: *.gif$\n", FOO, "/x/y.gif", False, "a rule may start with *"),
    ("User-agent: *\nDisallow: /fish$*\n", FOO, "/fish$x", False, "a $ not at the end is a literal"),
    ("User-agent: *\nDisallow: /fish$*\n", FOO, "/fish", True, "a $ not at the end is a literal"),
    ("User-agent: *\nDisallow: /path/foo-%24\n", FOO, "/path/foo-$", False,
     "RFC 9309 §2.2.3: a literal $ is written %24"),
    ("User-agent: *\nDisallow: /path/file-with-a-%2A.html\n", FOO, "https://www.example.com/path/file-with-a-*.html",
     False, "RFC 9309 §2.2.3: a literal * is written %2A"),
    ("User-agent: *\nDisallow: /path/file-with-a-%2A.html\n", FOO, "/path/file-with-a-x.html", True,
     "RFC 9309 §2.2.3: %2A is no wildcard"),
    ("User-agent: *\nDisallow: /a*b*c$\n", FOO, "/aXbYbZc", False, "several wildcards"),
    ("User-agent: *\nDisallow: /a*b*c$\n", FOO, "/aXbYbZcd", True, "several wildcards"),
    ("User-agent: *\nDisallow: /*?\n", FOO, "/page?x=1", False, "a query anywhere"),
    ("User-agent: *\nDisallow: /*?\n", FOO, "/page", True, "a query anywhere"),
    ("User-agent: *\nDisallow: /*/print\n", FOO, "/page?next=a/print", False, "* crosses into the query"),
    # --- RFC 9309 §2.2.2 percent-encoding table (both sides normalised)
    ("User-agent: *\nDisallow: /foo/bar?baz=quz\n", FOO, "/foo/bar?baz=quz", False, "RFC 9309 §2.2.2 row 1"),
    ("User-agent: *\nDisallow: /foo/bar?baz=https://foo.bar\n", FOO, "/foo/bar?baz=https%3A%2F%2Ffoo.bar", False,
     "RFC 9309 §2.2.2 row 2"),
    ("User-agent: *\nDisallow: /foo/bar?baz=https%3A%2F%2Ffoo.bar\n", FOO, "/foo/bar?baz=https://foo.bar", False,
     "RFC 9309 §2.2.2 row 2, the other way"),
    ("User-agent: *\nDisallow: /foo/bar/ツ\n", FOO, "/foo/bar/%E3%83%84", False, "RFC 9309 §2.2.2 row 3"),
    ("User-agent: *\nDisallow: /foo/bar/ツ\n", FOO, "/foo/bar/%e3%83%84", False, "hex case does not matter"),
    ("User-agent: *\nDisallow: /foo/bar/ツ\n", FOO, "/foo/bar/ツ", False,
     "RFC over Google: the URL is normalised too (Google's spec test expects the raw URL to miss)"),
    ("User-agent: *\nDisallow: /foo/bar/%E3%83%84\n", FOO, "/foo/bar/%E3%83%84", False, "RFC 9309 §2.2.2 row 4"),
    ("User-agent: *\nDisallow: /foo/bar/%E3%83%84\n", FOO, "/foo/bar/ツ", False, "RFC over Google"),
    ("User-agent: *\nDisallow: /foo/bar/%62%61%7A\n", FOO, "/foo/bar/baz", False,
     "RFC 9309 §2.2.2 row 5 (RFC over Google)"),
    ("User-agent: *\nDisallow: /foo/bar/%62%61%7A\n", FOO, "/foo/bar/%62%61%7A", False, "RFC 9309 §2.2.2 row 5"),
    ("User-agent: *\nDisallow: /foo/bar/baz\n", FOO, "/foo/bar/%62%61%7a", False, "unreserved decoded in the URL"),
    ("User-agent: *\nDisallow: /a/b\n", FOO, "/a%2Fb", True, "a reserved %2F in a path is not a /"),
    ("User-agent: *\nDisallow: /*url=http%3A%2F%2F\n", FOO, "/go?url=http%3A%2F%2Fevil.example", False,
     "an encoded query value after a wildcard (Google matches it literally)"),
    ("User-agent: *\nDisallow: /*url=http%3A%2F%2F\n", FOO, "/go?url=http://evil.example", False,
     "the same value unencoded in the URL"),
    ("User-agent: *\nDisallow: /*url=http://\n", FOO, "/go?a=1&url=http%3a%2f%2fevil.example", False,
     "the rule unencoded, the URL encoded"),
    ("User-agent: *\nDisallow: /a%2fb\n", FOO, "/a%2Fb", False, "reserved %XX upper-cased both sides"),
    ("User-agent: FooBot\nDisallow: /\nAllow: /foo/bar?qux=taz&baz=http://foo.bar?tar&par\n", FOO,
     "http://foo.bar/foo/bar?qux=taz&baz=http://foo.bar?tar&par", True, "robotstxt-spec-test non-ascii-paths 1"),
    ("User-agent: *\nDisallow: /a b\n", FOO, "/a%20b", False, "a space is %20 on both sides"),
    ("User-agent: *\nDisallow: /ü\n", FOO, "/%C3%BC", False, "non-ASCII rule UTF-8 percent-encoded"),
    ("User-agent: *\nDisallow: /%C3%BC\n", FOO, "https://example.com/ü/x", False, "non-ASCII URL"),
    # --- paths are case-sensitive (RFC 9309 §2.2.2, ID_AllowDisallow_Value_CaseSensitive)
    ("User-agent: FooBot\nDisallow: /x/\n", FOO, "http://foo.bar/x/y", False, "case-sensitive"),
    ("User-agent: FooBot\nDisallow: /x/\n", FOO, "http://foo.bar/X/y", True, "case-sensitive"),
    # --- /robots.txt is always allowed (RFC 9309 §2.2.2)
    ("User-agent: *\nDisallow: /\n", FOO, "http://example.com/robots.txt", True, "RFC 9309 §2.2.2"),
    ("User-agent: *\nDisallow: /robots.txt\n", FOO, "/robots.txt", True, "RFC 9309 §2.2.2"),
    # --- groups (RFC 9309 §2.1, §2.2.1; robots_test ID_LineSyntax_Groups)
    ("allow: /foo/bar/\n\nuser-agent: FooBot\ndisallow: /\nallow: /x/\nuser-agent: BarBot\ndisallow: /\n"
     "allow: /y/\n\n\nallow: /w/\nuser-agent: BazBot\n\nuser-agent: FooBot\nallow: /z/\ndisallow: /\n",
     None, None, None, "see test_groups_of_google_line_syntax"),
    ("user-agent: FooBot\ndisallow: /fish\n\nuser-agent: *\ndisallow: /carrots\n\nuser-agent: FooBot\n"
     "disallow: /shrimp\n", FOO, "/shrimp", False, "Google: groups for one agent are merged"),
    ("user-agent: FooBot\ndisallow: /fish\n\nuser-agent: *\ndisallow: /carrots\n\nuser-agent: FooBot\n"
     "disallow: /shrimp\n", FOO, "/fish", False, "merged"),
    ("user-agent: FooBot\ndisallow: /fish\n\nuser-agent: *\ndisallow: /carrots\n\nuser-agent: FooBot\n"
     "disallow: /shrimp\n", FOO, "/carrots", True, "specific and global groups are not combined"),
    ("user-agent: FooBot\ndisallow: /fish\n\nuser-agent: *\ndisallow: /carrots\n\nuser-agent: FooBot\n"
     "disallow: /shrimp\n", "OtherBot", "/carrots", False, "* for an unnamed agent"),
    ("user-agent: a\nsitemap: https://example.com/sitemap.xml\n\nuser-agent: b\ndisallow: /\n", "a", "/x", False,
     "Google: a sitemap line does not end the user-agent lines"),
    ("user-agent: a\nsitemap: https://example.com/sitemap.xml\n\nuser-agent: b\ndisallow: /\n", "b", "/x", False,
     "Google"),
    ("User-agent: BarBot\nSitemap: https://foo.bar/sitemap\nUser-agent: *\nDisallow: /\n", "BarBot", "/x/y", False,
     "ID_LineSyntax_Groups_OtherRules"),
    ("User-agent: FooBot\nInvalid-Unknown-Line: unknown\nUser-agent: *\nDisallow: /\n", FOO, "/x/y", False,
     "ID_LineSyntax_Groups_OtherRules: unknown lines do not end a group"),
    ("User-agent: FooBot\nCrawl-delay: 5\nUser-agent: BarBot\nDisallow: /\n", FOO, "/x", False,
     "a crawl-delay line between user-agent lines"),
    ("User-agent: FooBot\nDisallow: /a\nUnknown: x\n\n# comment\nDisallow: /b\n", FOO, "/b", False,
     "blank, comment and unknown lines inside a group do not end it"),
    ("user-agent: *\nallow: /\nuser-agent: FooBot\ndisallow: /\n", FOO, "http://foo.bar/x/y", False,
     "ID_GlobalGroups_Secondary"),
    ("user-agent: *\nallow: /\nuser-agent: FooBot\ndisallow: /\n", "BarBot", "http://foo.bar/x/y", True,
     "ID_GlobalGroups_Secondary"),
    ("user-agent: FooBot\nallow: /\nuser-agent: BarBot\ndisallow: /\nuser-agent: BazBot\ndisallow: /\n", "QuxBot",
     "http://foo.bar/x/y", True, "ID_GlobalGroups_Secondary: no group applies → allowed"),
    ("", FOO, "/x", True, "empty robots.txt"),
    ("User-agent: *\nDisallow: /x/\nUser-agent: FooBot\nDisallow: /y/\n", FOO, "http://foo.bar/x/page", True,
     "ID_LongestMatch: the most specific group allows /x/ implicitly"),
    ("User-agent: *\nDisallow: /x/\nUser-agent: FooBot\nDisallow: /y/\n", FOO, "http://foo.bar/y/page", False,
     "ID_LongestMatch"),
    ("User-agent: FooBot\n", FOO, "/x", True, "a matching group without rules allows"),
    ("User-agent: FooBot\nUser-agent: *\nDisallow: /x\n", "OtherBot", "/x", False, "one group, two agents"),
    ("User-agent: FooBot\nUser-agent: *\nDisallow: /x\n", FOO, "/x", False, "one group, two agents"),
    # --- user agents: product tokens, case-insensitive, whole token
    ("User-Agent: *\nDisallow: /\nUser-Agent: Foo Bar\nAllow: /x/\nDisallow: /\n", "Foo", "http://foo.bar/x/y", True,
     "robotstxt-spec-test user-agent-name: value up to the first space"),
    ("user-agent: FOO BAR\nallow: /x/\ndisallow: /\n", "foo", "http://foo.bar/x/y", True, "case-insensitive"),
    ("user-agent: FoO bAr\nallow: /x/\ndisallow: /\n", "Foo", "http://foo.bar/a/b", False, "case-insensitive"),
    ("User-agent: Googlebot/2.1\nDisallow: /\n", "Googlebot", "/x", False, "token ends at /"),
    ("User-Agent: *\nDisallow: /\nUser-Agent: Foo Bar\nAllow: /x/\nDisallow: /\n", "Foo Bar", "http://foo.bar/x/y",
     True, "a UA string 'Foo Bar' is the products Foo and Bar (RFC 9110): we are Foo (Google's spec test "
     "rejects 'Foo Bar' as no valid token and applies *)"),
    ("User-agent: foo_bot\nDisallow: /a\nUser-agent: foo-bot\nDisallow: /b\n", "Foo_Bot", "/a", False,
     "_ and - are token characters"),
    ("User-agent: foo_bot\nDisallow: /a\nUser-agent: foo-bot\nDisallow: /b\n", "Foo_Bot", "/b", True,
     "foo_bot and foo-bot are two agents"),
    ("User-agent:\nDisallow: /\n", FOO, "/x", True, "an empty user-agent names no one"),
    ("User-agent: it\nDisallow: /\n", "wit-builder/1.0 (+https://example.org/bot)", "/x", True,
     "issue 30: a group 'it' is not ours"),
    ("User-agent: builder\nDisallow: /\n", "wit-builder/1.0 (+https://example.org/bot)", "/x", True,
     "issue 30: a group 'builder' is not ours"),
    ("User-agent: wit\nDisallow: /\n", "wit-builder/1.0", "/x", True, "whole token only"),
    ("User-agent: WIT-Builder\nDisallow: /\n", "wit-builder/1.0 (+https://example.org/bot)", "/x", False,
     "our token, any case"),
    ("User-agent: wit-builder-extended\nDisallow: /\n", "wit-builder", "/x", True, "a longer token is another agent"),
    ("User-agent: *bot\nDisallow: /\n", FOO, "/x", True, "'*bot' is no agent and not the global group"),
    ("User-agent: * \nDisallow: /\n", FOO, "/x", False, "'* ' is the global group"),
    ("User-agent: AI2Bot\nDisallow: /\n", "AI2Bot", "/x", False, "digits are token characters"),
    ("User-agent: AI2Bot\nDisallow: /\n", "AI", "/x", True, "digits are token characters"),
    # --- line syntax: case-insensitive keys, Google's accepted mistakes
    ("USER-AGENT: FooBot\nALLOW: /x/\nDISALLOW: /\n", FOO, "http://foo.bar/x/y", True, "ID_REPLineNamesCaseInsensitive"),
    ("uSeR-aGeNt: FooBot\nAlLoW: /x/\ndIsAlLoW: /\n", FOO, "http://foo.bar/a/b", False, "keys case-insensitive"),
    ("foo: FooBot\nbar: /\n", FOO, "http://foo.bar/x/y", True, "accepted-mistakes: unknown keys"),
    ("user-agent FooBot\ndisallow /\n", FOO, "http://foo.bar/x/y", False, "accepted-mistakes: missing colon"),
    ("user-agent FooBot\ndisallow / x\n", FOO, "http://foo.bar/x/y", True, "missing colon, three words: invalid"),
    ("useragent: FooBot\ndissallow: /\n", FOO, "/x", False, "Google's accepted key typos"),
    ("user agent: FooBot\ndisalow: /\n", FOO, "/x", False, "Google's accepted key typos"),
    ("  User-agent :  FooBot  \n\tDisallow\t:\t/x  \n", FOO, "/x", False, "whitespace around key, colon, value"),
    # --- rules not starting with / or * never match (RFC 9309 path-pattern; Google)
    ("User-agent: *\nDisallow: fish\n", FOO, "/fish", True, "a rule not starting with / is ignored"),
    ("User-agent: *\nDisallow: https://example.com/x\n", FOO, "/x", True, "a full URL is not a path"),
    # --- Google's index.html rule (robotstxt-spec-test index-page)
    ("User-Agent: *\nAllow: /allowed-slash/index.html\nDisallow: /\n", "foobot", "http://foo.com/allowed-slash/",
     True, "GoogleOnly_IndexHTMLisDirectory"),
    ("User-Agent: *\nAllow: /allowed-slash/index.html\nDisallow: /\n", "foobot",
     "http://foo.com/allowed-slash/index.htm", False, "GoogleOnly_IndexHTMLisDirectory"),
    ("User-Agent: *\nAllow: /allowed-slash/index.html\nDisallow: /\n", "foobot",
     "http://foo.com/allowed-slash/index.html", True, "GoogleOnly_IndexHTMLisDirectory"),
    ("User-Agent: *\nAllow: /allowed-slash/index.html\nDisallow: /\n", "foobot", "http://foo.com/anyother-url",
     False, "GoogleOnly_IndexHTMLisDirectory"),
    # --- line ends and byte-order mark
    ("User-agent: FooBot\rDisallow: /x\rAllow: /x/y\r", FOO, "/x/z", False, "CR line ends"),
    ("User-agent: FooBot\rDisallow: /x\rAllow: /x/y\r", FOO, "/x/y", True, "CR line ends"),
    ("User-agent: FooBot\r\nDisallow: /x\r\n\r\nAllow: /x/y\r\n", FOO, "/x/z", False, "CRLF line ends"),
    ("User-agent: FooBot\nDisallow: /x\r\nAllow: /x/y\rDisallow: /q\n", FOO, "/q", False, "mixed line ends"),
    ("\ufeffUser-agent: FooBot\nDisallow: /\n", FOO, "/x", False, "UTF-8 BOM skipped"),
    ("\ufeffUser-agent: FooBot\r\nDisallow: /\r\n", FOO, "/x", False, "BOM + CRLF"),
    ("User-agent: FooBot\n\ufeffDisallow: /\n", FOO, "/x", True, "a BOM inside the file is no BOM"),
]


def _rows():
    return [r for r in TABLE if r[1] is not None]


@pytest.mark.parametrize("body,agent,url,expected,source", _rows(), ids=[f"{i}:{r[4][:40]}" for i, r in enumerate(_rows())])
def test_conformance_table(body, agent, url, expected, source):
    rules = RobotsRules.parse(body.encode("utf-8"))
    assert rules.allowed(agent, url) is expected, source


def test_groups_of_google_line_syntax():
    """robots_test.cc ID_LineSyntax_Groups: rules outside groups ignored, blank lines keep a group open."""
    body = next(r[0] for r in TABLE if r[1] is None)
    rules = RobotsRules.parse(body)
    expect = {(FOO, "/x/b"): True, (FOO, "/z/d"): True, (FOO, "/y/c"): False, ("BarBot", "/y/c"): True,
              ("BarBot", "/w/a"): True, ("BarBot", "/z/d"): False, ("BazBot", "/z/d"): True,
              (FOO, "/foo/bar/"): False, ("BarBot", "/foo/bar/"): False, ("BazBot", "/foo/bar/"): False}
    for (agent, path), allowed in expect.items():
        assert rules.allowed(agent, "http://foo.bar" + path) is allowed, (agent, path)


def test_partial_and_broken_bom():
    assert not RobotsRules.parse(b"\xef\xbbUser-agent: FooBot\nDisallow: /\n").allowed(FOO, "/x")
    assert not RobotsRules.parse(b"\xefUser-agent: FooBot\nDisallow: /\n").allowed(FOO, "/x")
    # a broken BOM spoils the first line only (ID_UTF8ByteOrderMarkIsSkipped)
    rules = RobotsRules.parse(b"\xef\x11\xbfUser-agent: FooBot\nDisallow: /\n")
    assert rules.allowed(FOO, "/x") and rules.agents == set()


def test_only_first_500_kib_are_parsed():
    head = b"User-agent: FooBot\nDisallow: /early\n"
    filler = b"# " + b"x" * 1000 + b"\n"
    body = head + filler * ((MAX_BYTES - len(head)) // len(filler))
    late = b"Disallow: /late\n"
    # the last line that fits in 500 KiB is read; one cut by the limit and everything after it is not
    fits = body + b"Disallow: /fits\n"
    pad = b"#" * (MAX_BYTES - len(fits) - 5) + b"\n"
    big = fits + pad + b"Disallow: /cut-by-the-limit\n" + late * 2000
    assert len(big) > MAX_BYTES + 30_000
    rules = RobotsRules.parse(big)
    assert not rules.allowed(FOO, "/early") and not rules.allowed(FOO, "/fits")
    assert rules.allowed(FOO, "/cut-by-the-limit") and rules.allowed(FOO, "/cut") and rules.allowed(FOO, "/late")
    assert len(rules.to_bytes()) <= MAX_BYTES
    again = RobotsRules.from_bytes(rules.to_bytes())  # what a robots table stores reads the same
    assert again.allowed(FOO, "/cut") and not again.allowed(FOO, "/fits")


def test_disallow_cut_in_half_by_limit_is_not_read_as_shorter_rule():
    head = b"User-agent: FooBot\n"
    pad = b"#" * (MAX_BYTES - len(head) - len(b"\nDisallow: /pri")) + b"\n"
    body = head + pad + b"Disallow: /private\n"
    assert len(head + pad) + len(b"Disallow: /pri") == MAX_BYTES
    rules = RobotsRules.parse(body)
    assert rules.allowed(FOO, "/prix")  # "Disallow: /pri" would refuse it


def test_long_line_is_cut_at_googles_limit():
    """GoogleOnly_LineTooLong: a rule longer than the line limit is read up to it."""
    long_path = "/x/" + "a" * 17000
    rules = RobotsRules.parse(f"user-agent: FooBot\ndisallow: {long_path}/qux\n")
    assert rules.allowed(FOO, "/fux")
    assert not rules.allowed(FOO, long_path + "/fux")


def test_sitemaps_are_global_and_in_order():
    rules = RobotsRules.parse(
        "Sitemap: https://a.example/s1.xml\nUser-agent: FooBot\nSitemap: https://a.example/s2.xml\n"
        "Disallow: /x\nsite-map: https://a.example/s3.xml # note\nUser-agent: *\nsitemap:https://a.example/s4.xml\n")
    assert rules.sitemaps == ["https://a.example/s1.xml", "https://a.example/s2.xml", "https://a.example/s3.xml",
                              "https://a.example/s4.xml"]
    # the sitemap lines did not split FooBot's group
    assert not rules.allowed(FOO, "/x") and rules.allowed("Other", "/x")


def test_crawl_delay():
    rules = RobotsRules.parse("User-agent: FooBot\nCrawl-delay: 2.5\nDisallow: /x\nUser-agent: *\nCrawl-delay: 7\n"
                              "Disallow: /y\nUser-agent: FooBot\ncrawl-delay: 4\nDisallow: /z\nUser-agent: bad\n"
                              "Crawl-delay: soon\nDisallow: /w\n")
    assert rules.crawl_delay(FOO) == 4.0  # merged groups: the largest
    assert rules.crawl_delay("wit-builder/1.0") == 7.0  # the * group
    assert rules.crawl_delay("bad") is None  # named, but no valid delay: not the * one
    assert RobotsRules.parse("User-agent: *\nDisallow: /\n").crawl_delay(FOO) is None
    # a Crawl-delay between user-agent lines does not end them: both agents share it
    shared = RobotsRules.parse("User-agent: a\nCrawl-delay: 3\nUser-agent: b\nDisallow: /\n")
    assert shared.crawl_delay("a") == shared.crawl_delay("b") == 3.0


def test_disallows_agent_only_for_groups_naming_the_agent():
    rules = RobotsRules.parse("User-agent: *\nDisallow: /\n\nUser-agent: GPTBot\nDisallow: /images/\n"
                              "User-agent: CCBot\nAllow: /\n")
    assert rules.disallows_agent("GPTBot", "/images/a.jpg")
    assert not rules.disallows_agent("GPTBot", "/text/a.html")
    assert not rules.disallows_agent("CCBot", "/images/a.jpg")
    assert not rules.disallows_agent("ClaudeBot", "/images/a.jpg")  # only * applies: not an AI opt-out
    assert not rules.allowed("ClaudeBot", "/images/a.jpg")


def test_round_trip_and_fixed_outcomes():
    body = b"User-agent: FooBot\nDisallow: /x\nSitemap: https://e.example/s.xml\n"
    rules = RobotsRules.from_bytes(RobotsRules.parse(body).to_bytes())
    assert not rules.allowed(FOO, "/x") and rules.sitemaps == ["https://e.example/s.xml"]
    assert RobotsRules.allow_all().allowed(FOO, "/anything")
    deny = RobotsRules.disallow_all()
    assert not deny.allowed(FOO, "/anything") and not deny.allowed("wit-builder/1.0", "/")
    assert deny.allowed(FOO, "/robots.txt")
    assert not deny.disallows_agent("GPTBot", "/x")  # unreachable is not an opt-out


def test_non_utf8_bytes_in_rules_are_matched_as_octets():
    rules = RobotsRules.parse(b"User-agent: *\nDisallow: /caf\xe9\n")  # Latin-1 é
    assert not rules.allowed(FOO, "/caf%E9")
    assert rules.allowed(FOO, "/caf%C3%A9")


@pytest.mark.parametrize("ua,token", [("wit-builder/1.0 (+https://x.example/bot)", "wit-builder"),
                                      ("Googlebot-Image/1.0", "googlebot-image"), ("  CCBot/2.0", "ccbot"),
                                      ("Mozilla/5.0 (compatible; GPTBot/1.0)", "mozilla"), ("*", ""), ("", "")])
def test_product_token(ua, token):
    assert product_token(ua) == token


@pytest.mark.parametrize("url,path", [("", "/"), ("http://www.example.com", "/"), ("http://www.example.com/", "/"),
                                      ("http://www.example.com/a", "/a"), ("http://www.example.com/a/", "/a/"),
                                      ("http://www.example.com/a/b?c=http://d.e/", "/a/b?c=http://d.e/"),
                                      ("http://www.example.com/a/b?c=d&e=f#fg", "/a/b?c=d&e=f"),
                                      ("http://www.example.com?c=d&e=f#fg", "/?c=d&e=f"),
                                      ("http://www.example.com/a;b#c", "/a;b"), ("example.com", "/example.com"),
                                      ("//a.example/x?y", "/x?y"), ("/x#frag", "/x"), ("https://u:p@h:8080/p", "/p")])
def test_url_path(url, path):
    """robots_test.cc TestGetPathParamsQuery."""
    assert url_path(url) == path


@pytest.mark.parametrize("text,normal", [("/a/b", "/a/b"), ("/%7Efoo", "/~foo"), ("/%2f", "/%2F"), ("/ツ", "/%E3%83%84"),
                                         ("/a b", "/a%20b"), ("/100%", "/100%25"), ("/%zz", "/%25zz"),
                                         ("/p?u=a%3A%2F%2Fb", "/p?u=a://b"), ("/p%3F?q", "/p%3F?q"),
                                         ("/p?a=%26&b=%3D", "/p?a=%26&b=%3D")])
def test_normalise(text, normal):
    assert normalise(text)[0] == normal
