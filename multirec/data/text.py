"""Item text normalisation: what the text encoders see.

Titles, tags and descriptions are stripped of HTML, NFKC-normalised (full-width
characters, common in PixelRec's Chinese text, become their ASCII forms) and
whitespace-collapsed, then joined through a configurable template so the title is
never lost (an earlier implementation embedded the description only).
"""

from __future__ import annotations

import html
import re
import string
import unicodedata

from multirec.errors import ConfigError

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
# Separators left dangling when a template field is empty, e.g. "Title. . desc".
_EMPTY_SEPARATORS = re.compile(r"(?:\s*[.,;:|/-]\s*){2,}")
FIELDS = ("title", "tag", "description")


def clean_text(value: str | None) -> str:
    if not value:
        return ""
    value = html.unescape(_TAG.sub(" ", value))
    value = unicodedata.normalize("NFKC", value)
    return _SPACE.sub(" ", value).strip()


def check_template(template: str) -> None:
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    unknown = names - set(FIELDS)
    if unknown:
        raise ConfigError(
            f"data.text.template uses unknown field(s) {sorted(unknown)}; valid fields: {', '.join(FIELDS)}"
        )


def render_text(template: str, title: str, tag: str, description: str) -> str:
    """Fill the template with cleaned fields and tidy separators left by empty ones."""
    text = template.format(title=title, tag=tag, description=description)
    text = _EMPTY_SEPARATORS.sub(". ", text)
    return text.strip(" .,;:|/-")
