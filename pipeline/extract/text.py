"""Caption clean-up: unescape entities, collapse whitespace, cap the length; scalar and column-wise.

:func:`clean_text` is the rule; :func:`clean_text_column` gives the same answers for a whole batch,
leaving clean rows in Arrow (tests compare the two).
"""

from __future__ import annotations

import html

import pyarrow as pa

# Python's str.split() whitespace (str.isspace()) other than the plain space; a test checks the list.
_OTHER_WHITESPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_TEXT_NEEDS_WORK = f"[{_OTHER_WHITESPACE}]|  |^ | $"


def clean_text(s: str | None, max_len: int, unescape: bool = True) -> str:
    """Unescape entities, collapse whitespace, cap the length ("" means: no text)."""
    if not s:
        return ""
    if len(s) > 2 * max_len + 64:  # a gigantic attribute: clean only as much of it as the answer needs
        head = _clean_head(s[:2 * max_len + 64], unescape)
        if len(head) >= max_len:
            return head[:max_len]
    if unescape and "&" in s:
        s = html.unescape(s)
    return " ".join(s.split())[:max_len]


def _clean_head(head: str, unescape: bool) -> str:
    """The start that clean_text(head + anything) is sure to begin with: everything before the last
    "&" (an entity cut in two changes only what follows it: entities hold no "&"), less the last word
    (the text that follows may continue it)."""
    if unescape and "&" in head:
        head = html.unescape(head[:head.rfind("&")])
    return " ".join(head.split()[:-1])


def clean_text_column(texts: pa.Array, max_len: int, unescape: bool = True) -> pa.Array:
    """:func:`clean_text` of every row; rows that are already clean stay in Arrow, the rest (entities,
    odd whitespace, over ``max_len``) go through clean_text itself, so both always agree."""
    import pyarrow.compute as pc

    texts = pc.fill_null(texts, "")
    work = pc.match_substring_regex(texts, _TEXT_NEEDS_WORK + ("|&" if unescape else ""))
    work = pc.or_(work, pc.greater(pc.utf8_length(texts), max_len))
    if not pc.any(work).as_py():
        return texts
    fixed = [clean_text(s, max_len, unescape) for s in pc.filter(texts, work).to_pylist()]
    return pc.replace_with_mask(texts, work, pa.array(fixed, pa.string()))
