"""The public page's catalogues: complete, in step with the templates, placeholders kept;
a language is one catalogue; Accept-Language negotiation."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from controller import i18n
from controller.public import LANGUAGES

TEMPLATES = Path(i18n.__file__).parent / "web" / "templates"
SLOT = re.compile(r"\{(\w+)\}")


def template_messages() -> set[str | tuple[str, str]]:
    found: set[str | tuple[str, str]] = set()
    method_map = [("**.html", "jinja2")]
    options = {"**.html": {"extensions": "jinja2.ext.i18n,jinja2.ext.do"}}
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(TEMPLATES), method_map, options
    ):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


def catalogue(lang: str):  # type: ignore[no-untyped-def]
    with i18n.catalogue_path(lang).open("rb") as fp:
        return read_po(fp)


def test_the_languages_are_the_catalogues() -> None:
    assert i18n.catalogue_languages() == ("de", "en", "fr", "nl")
    assert frozenset(i18n.catalogue_languages()) == LANGUAGES


@pytest.mark.parametrize("lang", ["de", "en", "fr", "nl"])
def test_each_catalogue_holds_exactly_the_templates_strings(lang: str) -> None:
    ids = {m.id if isinstance(m.id, str) else tuple(m.id) for m in catalogue(lang) if m.id}
    assert ids == template_messages(), "extract the templates again (docs/public-page.md)"


@pytest.mark.parametrize("lang", ["de", "fr", "nl"])
def test_each_translation_is_complete_and_keeps_its_slots(lang: str) -> None:
    for message in catalogue(lang):
        if not message.id:
            continue
        assert not message.fuzzy, message.id
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        strings = [message.string] if isinstance(message.string, str) else list(message.string)
        assert all(strings), f"{lang}: {message.id!r} is not translated"
        slots = set(SLOT.findall(ids[-1]))
        for string in strings:
            assert set(SLOT.findall(string)) == slots, (lang, message.id, string)


def test_translations_are_compiled_in_memory() -> None:
    fr = i18n.translations("fr")
    assert fr.gettext("Lit") == "Illuminé"
    assert fr.ngettext("{total} monument", "{total} monuments", 2) == "{total} monuments"
    assert i18n.translations("en").gettext("Lit") == "Lit"


def test_dates_are_formatted_in_the_locale_each_catalogue_names() -> None:
    assert str(i18n.locale("en")) == "en_GB"  # 24-hour times for a European audience
    assert str(i18n.locale("fr")) == "fr"
    assert i18n.bcp47(i18n.locale("en")) == "en-GB"
    assert str(i18n.locale("xx")) == "en"  # no catalogue, no such locale


def test_adding_a_language_is_adding_its_catalogue(tmp_path: Path) -> None:
    root = tmp_path / "locales"
    shutil.copytree(i18n.LOCALES / "fr", root / "fr")
    assert i18n.catalogue_languages(root) == ("fr",)
    source = (root / "fr" / "LC_MESSAGES" / "messages.po").read_text()
    target = root / "lb" / "LC_MESSAGES" / "messages.po"
    target.parent.mkdir(parents=True)
    target.write_text(source.replace('msgstr "Illuminé"', 'msgstr "Beliicht"'))
    assert i18n.catalogue_languages(root) == ("fr", "lb")
    assert i18n.compile_catalogue(target).gettext("Lit") == "Beliicht"


def test_a_broken_catalogue_names_its_file(tmp_path: Path) -> None:
    broken = tmp_path / "messages.po"
    broken.write_text('msgid "Lit"\nmsgstr "a\nb"\n')
    with pytest.raises(i18n.CatalogueError, match=re.escape(str(broken))):
        i18n.compile_catalogue(broken)


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        (None, "en"),
        ("", "en"),
        ("fr", "fr"),
        ("fr-BE,fr;q=0.9,en;q=0.8", "fr"),
        ("NL-be", "nl"),
        ("es, de;q=0.4", "de"),
        ("en;q=0.1, nl;q=0.8", "nl"),
        ("de;q=0, fr;q=0.2", "fr"),
        ("*", "en"),
        ("ja, zh", "en"),
        ("fr;q=abc, de", "de"),
        ("x" * 100, "en"),
    ],
)
def test_negotiate(header: str | None, lang: str) -> None:
    assert i18n.negotiate(header, ("de", "en", "fr", "nl"), "en") == lang
