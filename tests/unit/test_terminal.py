"""Terminal safety of user-controlled text (issue 18, case 8): file names, error lines, answers."""

from __future__ import annotations

import os
import unicodedata

import pytest

from omnizip_cli.errors import MediaError, OmnizipError
from omnizip_cli.terminal import escape_control, sanitize_answer

# (hostile text, what escape_control shows, what sanitize_answer keeps)
HOSTILE = [
    ("clear\x1b[2J.mp4", "clear\\x1b[2J.mp4", "clear.mp4"),
    ("title\x1b]0;PWNED\x07.mp4", "title\\x1b]0;PWNED\\x07.mp4", "title.mp4"),
    ("st\x1b]0;T\x1b\\x.mp4", "st\\x1b]0;T\\x1b\\x.mp4", "stx.mp4"),
    ("clip\x1b]52;c;ZXZpbA==\x07.mp4", "clip\\x1b]52;c;ZXZpbA==\\x07.mp4", "clip.mp4"),  # OSC 52 clipboard
    ("link\x1b]8;;http://evil\x1b\\x\x1b]8;;\x1b\\", "link\\x1b]8;;http://evil\\x1b\\x\\x1b]8;;\\x1b\\", "linkx"),
    ("bell\x07.mp4", "bell\\x07.mp4", "bell.mp4"),
    ("8bit\x9b2J.mp4", "8bit\\x9b2J.mp4", "8bit.mp4"),  # C1 CSI
    ("osc8\x9d0;T\x9c.mp4", "osc8\\x9d0;T\\x9c.mp4", "osc8.mp4"),
    ("del\x7f.mp4", "del\\x7f.mp4", "del.mp4"),
    ("nul\x00.mp4", "nul\\x00.mp4", "nul.mp4"),
    ("back\x08\x08\x08spaced", "back\\x08\\x08\\x08spaced", "backspaced"),
    ("reset\x1bc", "reset\\x1bc", "reset"),
    ("color\x1b[31mred\x1b[0m", "color\\x1b[31mred\\x1b[0m", "colorred"),
    ("keep\ttab\nnewline", "keep\\ttab\\nnewline", "keep\ttab\nnewline"),
    ("cr\rover", "cr\\rover", "cr\nover"),
    ("crlf\r\nline", "crlf\\r\\nline", "crlf\nline"),
    ("evil\u202egnp.mp4", "evil\\u202egnp.mp4", "evilgnp.mp4"),  # right-to-left override
    ("iso\u2066late\u2069", "iso\\u2066late\\u2069", "isolate"),
    ("line\u2028sep", "line\\u2028sep", "linesep"),
    ("bad\udcffbyte", "bad\\xffbyte", "bad\ufffdbyte"),  # surrogateescape'd byte from a file name
]


@pytest.mark.parametrize(("text", "escaped", "_"), HOSTILE)
def test_escape_control_makes_controls_visible(text: str, escaped: str, _: str) -> None:
    assert escape_control(text) == escaped


@pytest.mark.parametrize(("text", "_", "kept"), HOSTILE)
def test_sanitize_answer_keeps_text_newlines_and_tabs(text: str, _: str, kept: str) -> None:
    assert sanitize_answer(text) == kept


@pytest.mark.parametrize("text", [t for t, _, _ in HOSTILE])
def test_outputs_have_no_control_characters(text: str) -> None:
    """Whatever the input: no C0/C1/DEL, no bidi controls, always encodable as UTF-8."""
    for out, allowed in ((escape_control(text), ""), (sanitize_answer(text), "\n\t")):
        for char in out:
            if char in allowed:
                continue
            assert unicodedata.category(char) not in ("Cc", "Cs", "Zl", "Zp"), (text, out)
            assert char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
        out.encode("utf-8")


@pytest.mark.parametrize(
    "text", ["plain.mp4", "vidéo 日本語 🎬.mkv", "a\\b.mp4", "résumé—final (1).webm", "عربى.mp4", ""]
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert escape_control(text) == text
    assert sanitize_answer(text) == text


def test_every_single_code_point_below_0x100_is_handled() -> None:
    for code in range(0x100):
        char = chr(code)
        shown = escape_control(char)
        if code < 0x20 or 0x7F <= code <= 0x9F:
            assert shown.startswith("\\") and shown.isprintable(), hex(code)
        else:
            assert shown == char


def test_error_lines_escape_file_names() -> None:
    name = "x\x1b]0;TITLE\x07\x1b[2J.mp4"
    line = MediaError(f"no such file: {name}", hint="check the\npath").one_line()
    assert line == "no such file: x\\x1b]0;TITLE\\x07\\x1b[2J.mp4. Hint: check the path"
    assert "\x1b" not in line and "\x07" not in line


def test_error_lines_still_collapse_whitespace() -> None:
    assert OmnizipError("a\n  b\tc").one_line() == "a b c"


def test_a_real_file_with_an_escape_in_its_name(tmp_path) -> None:
    """End to end through load_media: the error names the file, escaped."""
    from omnizip_cli.media import load_media

    path = tmp_path / "\x1b[2Jclip.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaError) as info:
        load_media(path)
    assert info.value.one_line() == f"{escape_control(os.fspath(path))} is empty (0 bytes)"
    assert "\\x1b[2Jclip.mp4 is empty" in info.value.one_line()
