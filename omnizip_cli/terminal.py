"""Make user-controlled text safe to show on a terminal (issue 18, case 8).

A file name, a folder name or a model answer can carry terminal control sequences: ``ESC [ 2 J``
clears the screen, ``ESC ] 0 ; TITLE BEL`` sets the window title, OSC 52 writes the clipboard on
some terminals, and the Unicode bidi controls (U+202E...) reorder what is displayed ("Trojan
Source"). Two policies:

* :func:`escape_control` for text *about* files (the report, the spinner, error lines): every
  control is shown, visibly and readably, as an escape (``\\x1b[2J``, ``\\n``, ``\\u202e``), so the
  user sees that the name is odd and what it holds. It is for display only: a backslash already in
  the text is left as is, so the result is not meant to be parsed back.
* :func:`sanitize_answer` for model answers printed on stdout: the text stays text. Escape
  sequences (CSI, OSC, DCS and the like) are removed whole, ``\\r\\n`` and a lone ``\\r`` become
  ``\\n``, and every other control byte or bidi control is dropped; newline and tab are kept.

Both also turn lone surrogates (file names that are not valid UTF-8 arrive as
``surrogateescape`` code points U+DC80-U+DCFF) into something printable, so writing the text can
never raise ``UnicodeEncodeError``.
"""

from __future__ import annotations

import re

#: Unicode bidirectional formatting controls: embeddings, overrides, isolates and marks.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
#: Line and paragraph separators: some terminals and editors start a new line on them.
LINE_SEPARATORS = frozenset("\u2028\u2029")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _escape_char(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _needs_escape(char: str) -> bool:
    return _is_control(char) or char in BIDI_CONTROLS or char in LINE_SEPARATORS or 0xD800 <= ord(char) <= 0xDFFF


def escape_control(text: str) -> str:
    """``text`` with every terminal control made visible and inert.

    Escapes C0 controls (including ESC, BEL, newline, CR and tab), DEL, C1 controls (U+0080-U+009F,
    among them the 8-bit CSI U+009B), the bidi controls of :data:`BIDI_CONTROLS`, U+2028/U+2029 and
    lone surrogates. Printable text, including non-ASCII letters and emoji, is unchanged::

        >>> escape_control("a\\x1b[2Jb.mp4")
        'a\\\\x1b[2Jb.mp4'
    """
    if not any(_needs_escape(char) for char in text):
        return text
    return "".join(_escape_char(char) if _needs_escape(char) else char for char in text)


# ESC followed by: CSI ("[" params final), OSC/DCS/SOS/PM/APC (string up to BEL or ST), or a
# two/three-character escape (charset selection, keypad modes, RIS...). 8-bit CSI/OSC too.
_ESCAPE_SEQUENCE = re.compile(
    r"""
    (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?      # CSI ... final byte
    | (?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])               # OSC, DCS, SOS, PM, APC ...
      [^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?               # ... up to BEL or ST (or the line end)
    | \x1b[\x20-\x2f]*[\x30-\x7e]?                          # other escapes (ESC c, ESC ( B, ESC =)
    """,
    re.VERBOSE,
)


def sanitize_answer(text: str) -> str:
    """A model answer safe for stdout: no control characters but newline and tab.

    Terminal escape sequences are removed whole (their parameters are not text), ``\\r\\n`` and a
    lone ``\\r`` become ``\\n``, other C0/C1 controls, DEL, the bidi controls and U+2028/U+2029 are
    dropped, lone surrogates become U+FFFD.
    """
    text = _ESCAPE_SEQUENCE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for char in text:
        if char in "\n\t":
            out.append(char)
        elif _is_control(char) or char in BIDI_CONTROLS or char in LINE_SEPARATORS:
            continue
        elif 0xD800 <= ord(char) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(char)
    return "".join(out)


def is_valid_text(text: str) -> bool:
    """False for text holding bytes that were not valid UTF-8 (Python keeps them as lone surrogates:
    command-line arguments, stdin read with ``surrogateescape``, ``\\ud800`` escapes in JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
