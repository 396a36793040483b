"""Stable identifiers: the same (url, text) gives the same uid on every machine and run."""

import hashlib


def make_uid(url: str, text: str) -> str:
    """128-bit hex uid of a (url, text) pair; collision-free in practice at 10^10 pairs."""
    return uids_of_keys([url.encode("utf-8", "surrogatepass") + b"\x00" + text.encode("utf-8", "surrogatepass")])[0]


def uids_of_keys(keys: list[bytes]) -> list[str]:
    """make_uid of many pairs at once, each given as its key ``url + b"\\x00" + text`` (UTF-8): for
    callers that build the keys column-wise (extraction joins them with an Arrow kernel)."""
    blake2b = hashlib.blake2b
    return [blake2b(k, digest_size=16).hexdigest() for k in keys]


def hash_to_unit(*parts: object) -> float:
    """A reproducible draw in [0, 1) from the parts: hash(parts) / 2^64 (used by balancing)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "big") / 2.0**64
