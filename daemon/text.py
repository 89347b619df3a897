"""File names as text: shown safely on line-oriented outputs, carried losslessly in JSON.

A Linux file name is bytes. Python hands names that are not valid UTF-8 over as `str` with surrogate
escapes (PEP 383: byte 0xff becomes U+DCFF), and dupwatch keeps that `str` end to end, so the worker opens
exactly the file that landed. Two things go wrong with such names, and with names holding control
characters, unless every output takes care:
- a newline or carriage return in a name would print a fake verdict or log line (a name is attacker
  input: anyone who can drop a file into a watched folder chooses it), and an escape sequence would
  drive the reader's terminal;
- a surrogate escape cannot be encoded as UTF-8, so a plain `print`, `json.dumps(ensure_ascii=False)` +
  `.encode()` or SQLite binding raises UnicodeEncodeError and drops the event.
"""

from __future__ import annotations

import json
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str) -> str:
    """`text` for a human line: control characters and undecodable bytes become backslash escapes
    (`\\n`, `\\x1b`, `\\xff` for the byte 0xff), everything else is left as it is."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a surrogate escape: the original byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in (0x2028, 0x2029):  # Unicode line and paragraph separators
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def dumps(obj: Any, **kwargs: Any) -> str:
    """JSON that always encodes as UTF-8: readable non-ASCII as it is, but `\\udcff`-style escapes
    (valid JSON, and `json.loads` gives back the exact name) when a name holds undecodable bytes."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, **kwargs)
    return text
