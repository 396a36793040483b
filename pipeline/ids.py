"""Stable identifiers: the same (url, text) gives the same uid on every machine and run."""

import hashlib


def make_uid(url: str, text: str) -> str:
    """128-bit hex uid of a (url, text) pair; collision-free in practice at 10^10 pairs."""
    h = hashlib.blake2b(digest_size=16)
    h.update(url.encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def hash_to_unit(*parts: object) -> float:
    """A reproducible draw in [0, 1) from the parts: hash(parts) / 2^64 (used by balancing)."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "big") / 2.0**64
