"""How query entries and caption text are spaced before matching (MetaCLIP's rule), shared by the query
list, its Wikipedia source and the matcher."""

_WRAP = ",.;:?!`"
_BLANK = "\t\r\n"
_STRIP = "\"'()[]{}<>«»“”‘’"


def spacing(text: str) -> str:
    """MetaCLIP's text normalisation: pad with spaces, space-wrap ``, . ; : ? ! ` ``, blank tab/CR/LF."""
    s = f" {text} "
    for c in _WRAP:
        if c in s:
            s = s.replace(c, f" {c} ")
    for c in _BLANK:
        if c in s:
            s = s.replace(c, " ")
    return s


def valid_entry(entry: str) -> bool:
    """Entries that are empty/blank or a single punctuation/symbol character are dropped."""
    return bool(entry.strip()) and not (len(entry) == 1 and not entry.isalnum())
