"""What a text says, apart from the form it is written in: the content of a JSON document or
an HTML page (with the parts of the page a reader does not see), and the sentence units that
localised scoring judges one by one.

Pure functions of the text (no model, no native code), shared by the ``classifier`` check and
its benchmarks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

# Sentence ends (Latin and CJK punctuation, a colon or semicolon) followed by space, or a line
# break: where one unit ends and the next begins.
_UNIT_BREAK = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f])\s+|\n+")
#: A unit has at least this many words: shorter pieces join the next one, so a unit is a
#: clause that can say something ("Status: draft" alone cannot).
UNIT_MIN_WORDS = 4
_JSON_MAX_CHARS = 1 << 20
# The words of an identifier-style key: ``snake_case``, ``kebab-case``, ``dotted.name``,
# ``camelCase``.
_KEY_WORD_BREAK = re.compile(r"[\s_\-.]+|(?<=[a-z])(?=[A-Z])")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as all its (key, value) pairs: a repeated key keeps every value (the
    raw text, which the model behind the firewall reads, has them all)."""


def _key_prose(key: str) -> str:
    """``key`` as prose when it is some: several words as written, or an identifier of at
    least :data:`UNIT_MIN_WORDS` words (``ignore_all_previous_rules``); else empty."""
    if len(key.split()) > 1:  # a key of several words is prose, not an identifier
        return key.strip()
    words = [w for w in _KEY_WORD_BREAK.split(key) if w]
    return " ".join(words) if len(words) >= UNIT_MIN_WORDS else ""


def _json_strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if value.strip():
            out.append(value.strip())
    elif isinstance(value, _Pairs):
        for k, v in value:
            prose = _key_prose(k)
            if prose:
                out.append(prose)
            _json_strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _json_strings(v, out)


@dataclass(frozen=True, slots=True)
class Content:
    """A text's content view and, for an HTML page, what the page hides from its reader."""

    #: The text without the syntax around its prose (the text itself when it has none).
    text: str
    #: ``(kind, text)`` of the page's hidden parts of at least :data:`UNIT_MIN_WORDS` words, in
    #: order: ``html_comment``, ``html_attribute`` (an attribute's prose, such as ``alt``) and
    #: ``html_hidden`` (the text of an element hidden by ``hidden``, ``aria-hidden`` or a
    #: style such as ``display:none`` or ``font-size:0``).
    hidden: tuple[tuple[str, str], ...] = ()


def content_view(text: str) -> str:
    """``text`` without the syntax of the structure around its prose (see :func:`content`)."""
    return content(text).text


def content(text: str) -> Content:
    """What ``text`` says, apart from the syntax of the structure around its prose.

    - A text that is one JSON document becomes its string values, one per line (numbers,
      punctuation and one-word keys are syntax; a key of several words is kept).
    - An HTML page or fragment (two HTML tags or comments at least) becomes its text, one
      line per block, with comments and the prose of attributes on lines of their own where
      they stand; tags that are not HTML (``<system>``, ``<rules>``) stay as written. The
      parts a reader of the rendered page does not see are returned besides, to be judged on
      their own (:attr:`Content.hidden`).
    - Any other text is returned as it is, and so is a document too deeply nested to walk.

    The classifier was trained on prose: it scores the syntax of a JSON request or an HTML
    page as suspicious whatever it carries (the benign battery's wrapped texts), while an
    attack inside still reads as an attack in the content. The hiding place of an HTML
    comment or a hidden element is itself a signal, which is why those parts are also judged
    alone, where the page's visible text cannot dilute them. Markdown is left alone.
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= _JSON_MAX_CHARS:
        out: list[str] = []
        try:
            _json_strings(json.loads(stripped, object_pairs_hook=_Pairs), out)
        except (ValueError, RecursionError):
            return Content(text)
        return Content("\n".join(out))
    if len(text) <= _JSON_MAX_CHARS and _is_html(text):
        return _html_content(text)
    return Content(text)


# ------------------------------------------------------------------ HTML


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


#: The elements of HTML; any other tag (``<system>``, ``<instructions>``) is kept as text.
_HTML_ELEMENTS = _names("""
    a abbr address area article aside audio b base bdi bdo blockquote body br button canvas
    caption center cite code col colgroup data datalist dd del details dfn dialog div dl dt em
    embed fieldset figcaption figure font footer form h1 h2 h3 h4 h5 h6 head header hgroup hr
    html i iframe img input ins kbd label legend li link main map mark menu meta meter nav
    noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp
    script section select slot small source span strong style sub summary sup svg table tbody
    td template textarea tfoot th thead time title tr track u ul var video wbr""")
_VOID_ELEMENTS = _names("area base br col embed hr img input link meta param source track wbr")
# Elements that start a line of their own in the view.
_BLOCK_ELEMENTS = _names("""
    address article aside blockquote body br caption dd details dialog div dl dt fieldset
    figcaption figure footer form h1 h2 h3 h4 h5 h6 head header hr html li main nav ol p pre
    section summary table tbody td tfoot th thead title tr ul""")
# Attributes whose values are syntax (styles, class lists, addresses, geometry), not prose.
_SYNTAX_ATTRIBUTES = _names("style class id href src srcset sizes d points viewbox transform")
_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d]*[1-9])"
    r"|opacity\s*:\s*0(?![.\d]*[1-9])", re.IGNORECASE)
_HTML_MARK = re.compile(r"<!--|</?([A-Za-z][A-Za-z0-9]*)\b[^<>]*>")
_BLANKS = re.compile(r"[ \t\r\f\v]+")


def _is_html(text: str) -> bool:
    """Two HTML tags or comments at least: a page or fragment, not prose that names a tag."""
    n = 0
    for m in _HTML_MARK.finditer(text):
        if m.group(1) is None or m.group(1).lower() in _HTML_ELEMENTS:
            n += 1
            if n == 2:
                return True
    return False


def _hides(attribute: str, value: str) -> bool:
    """Whether an attribute hides its element from the page's reader."""
    if attribute == "hidden" or (attribute == "aria-hidden" and value.lower() == "true"):
        return True
    return attribute == "style" and _HIDING_STYLE.search(value) is not None


def _words(text: str) -> str:
    return " ".join(text.split())


class _PageText(HTMLParser):
    """The text of a page, and its hidden parts (see :func:`content`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden: list[tuple[str, str]] = []
        # Open HTML elements: (tag, hidden, the text of the outermost hidden one or None).
        self._open: list[tuple[str, bool, list[str] | None]] = []
        # How many of each tag are open: an end tag with none open is skipped at once (a
        # page of stray end tags must not cost a walk of the stack each).
        self._open_tags: dict[str, int] = {}
        # The text of the outermost open hidden element, while there is one.
        self._collecting: list[str] | None = None

    def _text(self, data: str) -> None:
        self.parts.append(data)
        if self._collecting is not None:
            self._collecting.append(data)

    def _aside(self, kind: str, data: str) -> None:
        """A comment or an attribute's prose: a line of its own in the view, and hidden."""
        data = _words(data)
        if not data:
            return
        self.parts.append(f"\n{data}\n")
        if len(data.split()) >= UNIT_MIN_WORDS:
            self.hidden.append((kind, data))

    def _close_hidden(self, collected: list[str] | None) -> None:
        if collected is not None:
            self._collecting = None
            words = _words("".join(collected))
            if len(words.split()) >= UNIT_MIN_WORDS:
                self.hidden.append(("html_hidden", words))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs, void=tag in _VOID_ELEMENTS)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._element(tag, attrs, void=True)

    def _element(self, tag: str, attrs: list[tuple[str, str | None]], *, void: bool) -> None:
        if tag not in _HTML_ELEMENTS:
            self._text(self.get_starttag_text() or "")
            return
        if tag in _BLOCK_ELEMENTS:
            self._text("\n")
        hides = False
        for name, value in attrs:
            hides = hides or _hides(name, value or "")
            if value and name not in _SYNTAX_ATTRIBUTES and len(value.split()) >= UNIT_MIN_WORDS:
                self._aside("html_attribute", value)
        if not void:
            inside = bool(self._open) and self._open[-1][1]
            collected: list[str] | None = None
            if hides and not inside:
                collected = self._collecting = []
            self._open.append((tag, inside or hides, collected))
            self._open_tags[tag] = self._open_tags.get(tag, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag not in _HTML_ELEMENTS:
            self._text(f"</{tag}>")
            return
        if tag in _BLOCK_ELEMENTS:
            self._text("\n")
        if not self._open_tags.get(tag):
            return
        # Close up to the matching open element (HTML lets end tags be left out).
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                for closed, _, collected in reversed(self._open[i:]):
                    self._open_tags[closed] -= 1
                    self._close_hidden(collected)
                del self._open[i:]
                break

    def handle_data(self, data: str) -> None:
        self._text(data)

    def handle_comment(self, data: str) -> None:
        self._aside("html_comment", data)

    def handle_decl(self, decl: str) -> None:
        # <!DOCTYPE html> is syntax; a longer declaration is words the model behind us reads.
        if len(decl.split()) >= UNIT_MIN_WORDS:
            self._aside("html_comment", decl)

    def handle_pi(self, data: str) -> None:
        self._aside("html_comment", data)

    def unknown_decl(self, data: str) -> None:
        self._text(data.removeprefix("CDATA["))

    def finish(self) -> Content:
        self.close()
        for _, _, collected in reversed(self._open):
            self._close_hidden(collected)
        self._open.clear()
        lines = (_BLANKS.sub(" ", line).strip() for line in "".join(self.parts).split("\n"))
        return Content("\n".join(line for line in lines if line), tuple(self.hidden))


def _html_content(text: str) -> Content:
    parser = _PageText()
    try:
        parser.feed(text)
        return parser.finish()
    except (AssertionError, ValueError):  # a malformed page: judged as written
        return Content(text)


def sentence_units(text: str, min_words: int = UNIT_MIN_WORDS) -> list[str]:
    """The sentences (and lines) of ``text``, pieces under ``min_words`` words joined to the
    next one (a short tail to the last), in order."""
    units: list[str] = []
    cur = ""
    for part in _UNIT_BREAK.split(text):
        part = part.strip()
        if not part:
            continue
        cur = f"{cur} {part}" if cur else part
        if len(cur.split()) >= min_words:
            units.append(cur)
            cur = ""
    if cur:
        if units:
            units[-1] = f"{units[-1]} {cur}"
        else:
            units.append(cur)
    return units
