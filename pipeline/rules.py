"""Rules shared by the run config, which validates values with them, and by the layers below it
(filters, fetch, extract), which apply them: kept here so that none of those imports the config.
"""

from __future__ import annotations

# The one URL length rule: extract, the caption filter and the fetcher all refuse longer URLs
# (url_too_long). Browsers, CDNs and most servers stop near this length; longer src values are inlined
# data or tracking blobs, not image locations.
MAX_URL_LENGTH = 2048


def split_dns_server(entry: str) -> tuple[str, int]:
    """(address, port) of a ``download.dns_servers`` entry: IP, IP:port or [IPv6]:port (port 53 by default)."""
    import ipaddress

    host, port = entry.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
        if port.isdigit() and 0 < int(port) < 65536:
            return host, int(port)
    except ValueError:
        pass
    raise ValueError(f"{entry!r} is not an IP address or IP:port (a DNS server cannot be given by name)")
