"""The benchmarks' many-host simulated web (bench/_simweb.py) serves the end-to-end bench's pages: each host's
home page links its pages, a page is HTML with its images, any other path an image; its DNS server names the hosts."""

from __future__ import annotations

import re

import requests

from bench._simweb import SimWeb, free_port, make_urls, plan_web
from bench.e2e import make_pages, site_pages


def test_served_pages_home_pages_and_images(tmp_path):
    hosts = plan_web(3, seed=0, dead=0, tarpit=0, ratelimit=0, slow=0)
    port = free_port()
    urls = make_urls(hosts, 40, port)
    pages = make_pages(urls, port)
    served = site_pages(pages)
    with SimWeb(hosts, port, tmp_path, pages=served) as web:
        import dns.resolver

        r = dns.resolver.Resolver(configure=False)
        ip, dns_port = web.dns.rsplit(":", 1)
        r.nameservers, r.port = [ip], int(dns_port)
        name = next(iter(served))
        addr = r.resolve(name, "A")[0].address
        assert addr == next(h["ip"] for h in hosts if h["name"] == name)
        home = requests.get(f"http://{addr}:{port}/", headers={"Host": name}, timeout=10)
        assert home.headers["Content-Type"].startswith("text/html")
        assert sorted(re.findall(r'href="([^"]+)"', home.text)) == sorted(served[name])
        path, body = next(iter(served[name].items()))
        page = requests.get(f"http://{addr}:{port}{path}", timeout=10)
        assert page.text == body and page.text.count("<img src=") >= 1
        img = requests.get(f"http://{addr}:{port}/i/0.jpg", timeout=10)
        assert img.headers["Content-Type"] == "image/jpeg" and img.content[:2] == b"\xff\xd8"
        assert requests.get(f"http://{addr}:{port}/robots.txt", timeout=10).status_code == 404
    assert web.stats[name]["pages"] == 2 and web.stats[name]["requests"] == 4
    # every pair is on exactly one page, with its own alt text
    assert sum(body.count("<img src=") for _, body in pages) == len(urls)


def test_without_pages_every_path_is_an_image(tmp_path):
    hosts = plan_web(1, seed=0, dead=0, tarpit=0, ratelimit=0, slow=0)
    port = free_port()
    with SimWeb(hosts, port, tmp_path):
        got = requests.get(f"http://{hosts[0]['ip']}:{port}/", timeout=10)
    assert got.headers["Content-Type"] == "image/jpeg"
