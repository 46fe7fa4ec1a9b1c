"""The public page's languages: gettext catalogues, and choosing one for a visitor.

Each language is one catalogue, `controller/web/locales/<lang>/LC_MESSAGES/messages.po`:
adding a language is adding its catalogue. The catalogues are compiled in memory when
first used (Babel), so there is no compiled file to build, ship or let go stale; a
catalogue that does not parse stops the start with its file and line.
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES = Path(__file__).parent / "web" / "locales"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"
"""The language the templates are written in; its catalogue may leave strings as they are."""

_lock = threading.Lock()


def catalogue_path(lang: str, root: Path = LOCALES) -> Path:
    return root / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def catalogue_languages(root: Path = LOCALES) -> tuple[str, ...]:
    """The languages that have a catalogue, sorted."""
    if not root.is_dir():
        return ()
    return tuple(sorted(p.name for p in root.iterdir() if catalogue_path(p.name, root).is_file()))


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file."""


def compile_catalogue(path: Path) -> Translations:
    """Read a .po file and compile it in memory (fuzzy entries are left out)."""
    try:
        with path.open("rb") as fp:
            catalog = read_po(fp, abort_invalid=True)
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read: {exc.strerror}") from None
    except Exception as exc:  # babel raises its own PoFileError, and ValueError
        raise CatalogueError(f"{path}: {exc}") from None
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


@lru_cache(maxsize=64)
def translations(lang: str, root: Path = LOCALES) -> Translations:
    """The compiled catalogue of `lang`."""
    with _lock:
        return compile_catalogue(catalogue_path(lang, root))


@lru_cache(maxsize=64)
def locale(lang: str, root: Path = LOCALES) -> Locale:
    """The Babel locale that formats dates, times and numbers in `lang`: the one its
    catalogue's `Language:` header names (the English catalogue says `en_GB`: 24-hour
    times, day before month, for a European audience), else `lang` itself."""
    path = catalogue_path(lang, root)
    if path.is_file():
        with path.open("rb") as fp:
            found = read_po(fp).locale
        if isinstance(found, Locale):
            return found
    try:
        return Locale.parse(lang)
    except (UnknownLocaleError, ValueError):
        return Locale.parse(SOURCE_LANGUAGE)


def bcp47(value: Locale) -> str:
    """`en_GB` as a browser writes it: `en-GB`."""
    return str(value).replace("_", "-")


def parse_accept_language(header: str) -> list[tuple[str, float]]:
    """The language ranges of an Accept-Language header, best first (q > 0 only)."""
    ranges: list[tuple[str, float, int]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        if not tag or len(tag) > 35:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if 0 < q <= 1:
            ranges.append((tag, q, index))
    ranges.sort(key=lambda r: (-r[1], r[2]))
    return [(tag, q) for tag, q, _ in ranges]


def negotiate(header: str | None, offered: tuple[str, ...], default: str) -> str:
    """The offered language that best fits an Accept-Language header (`fr-BE` takes
    `fr`; `*` takes the default), else the default."""
    if not header:
        return default
    for tag, _ in parse_accept_language(header):
        if tag == "*":
            return default
        primary = tag.split("-", 1)[0]
        if tag in offered:
            return tag
        if primary in offered:
            return primary
    return default
