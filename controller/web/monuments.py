"""Each monument's own page, its shareable picture, and the widget a city embeds.

- `GET /{lang}/monuments/{site_id}`: the monument's state, when and how its device
  confirmed it, its window and the campaign that lights it, with OpenGraph and Twitter
  card tags, so a shared link shows the state. The site id is the one the public status
  carries; a monument the status does not show is an HTML 404.
- `GET /api/v1/public/monuments/{site_id}.png?lang=`: the card of its current state
  (`controller.share_card`), with an ETag (a 304 for If-None-Match) and the feeds'
  caching.
- `GET /embed/{city}?lang=`: "N of M monuments confirmed lit" in the city, and a link
  to the page; in `lang`, else the language Accept-Language asks for. The one page
  others may frame (its own `frame-ancestors`); an unknown city is an HTML 404.

All of it comes from the public page's model (`controller.public_page`): the status
document's allow-list, the campaigns' public fields and the sites' names and photos.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response

from controller import i18n
from controller.public_page import CampaignView, CityView, SiteView, campaign_view
from controller.share_card import Card, render_card
from controller.web.feeds_api import etag_of
from controller.web.page import PAGE_CACHE, RETRY_S, Current, Formats, PublicPage
from controller.web.status_route import etag_matches
from schedules.model import display_name

CARD_PATH = "/api/v1/public/monuments/{site_id}.png"
CARD_CACHE = "public, max-age=30, s-maxage=60, stale-while-revalidate=300, stale-if-error=86400"
NOT_FOUND_CACHE = "public, max-age=30, s-maxage=60"
MAX_CARDS = 1024


@dataclass(frozen=True)
class Monument:
    site: SiteView
    city: CityView
    campaign: CampaignView | None
    """The campaign lighting it now, else the next one to (within the calendar)."""


def find_monument(current: Current, site_id: str, lang: str) -> Monument | None:
    for city in current.model.cities:
        for site in city.sites:
            if site.id == site_id:
                return Monument(site, city, _campaign(current, site_id, lang))
    return None


def _campaign(current: Current, site_id: str, lang: str) -> CampaignView | None:
    now = current.model.now
    by_id = {c.id: c for c in current.inputs.campaigns}
    for item in current.inputs.lit:  # by start: the one open now comes first
        if item.site == site_id and item.end > now and item.campaign in by_id:
            return campaign_view(by_id[item.campaign], lang)
    return None


def _words(lang: str) -> Any:
    return i18n.translations(lang)


def card_of(monument: Monument, lang: str) -> Card:
    """The card's words: the same the monument's page says."""
    tr = _words(lang)
    states = {
        "scheduled": tr.gettext("Scheduled"),
        "pending": tr.gettext("Pending"),
        "lit": tr.gettext("Lit"),
        "unconfirmed": tr.gettext("Unconfirmed"),
        "offline": tr.gettext("Offline"),
        "off": tr.gettext("Off"),
    }
    by = {
        "echo": tr.gettext("by the device's own report"),
        "readback": tr.gettext("by the device reading back its output"),
        "sensor": tr.gettext("by a light sensor"),
    }
    site = monument.site
    lines: list[str] = []
    if site.state == "lit" and site.confirmed_at is not None:
        line = tr.gettext("confirmed at {time}").replace(
            "{time}", Formats(lang).hm(site.confirmed_at, monument.city.zone)
        )
        if site.confirmed_by in by:
            line += " " + by[site.confirmed_by]
        lines.append(line[:1].upper() + line[1:])
    if monument.campaign is not None:
        lines.append(monument.campaign.title)
    return Card(
        name=site.name,
        city=monument.city.name,
        state=site.state if site.state in states else "unknown",
        state_label=states.get(site.state, site.state),
        lines=tuple(lines),
        color=site.color if site.state == "lit" else None,
    )


class Cards:
    """The last card of each monument and language, drawn again only when its words
    change."""

    def __init__(self, limit: int = MAX_CARDS) -> None:
        self.limit = limit
        self._cards: OrderedDict[tuple[str, str], tuple[Card, bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.drawn = 0

    def get(self, site_id: str, lang: str, card: Card) -> tuple[bytes, str]:
        key = (site_id, lang)
        with self._lock:
            known = self._cards.get(key)
            if known is not None and known[0] == card:
                self._cards.move_to_end(key)
                return known[1], known[2]
        body = render_card(card)
        etag = etag_of(body)
        with self._lock:
            self._cards[key] = (card, body, etag)
            self._cards.move_to_end(key)
            while len(self._cards) > self.limit:
                self._cards.popitem(last=False)
            self.drawn += 1
        return body, etag


def _base_url(request: Request, base_url: str | None) -> str:
    return base_url if base_url else str(request.base_url).rstrip("/")


def install_monuments(
    app: FastAPI, page: PublicPage, embed_policy: str, base_url: str | None = None
) -> None:
    """The monuments' own pages, their cards and the cities' widgets."""
    cards = Cards()
    app.state.cards = cards

    def monument_page(request: Request, site_id: str, lang: str) -> Response:
        current = page.current(lang)
        if not current.model.ready:
            return _starting(page, lang)
        found = find_monument(current, site_id, lang)
        if found is None:
            return _not_found_in(page, lang)
        base = _base_url(request, base_url)
        path = f"/{lang}/monuments/{site_id}"
        html = page.templates.render(
            lang,
            "monument.html",
            here=f"monuments/{site_id}",
            site=found.site,
            city=found.city,
            campaign=found.campaign,
            zone=found.city.zone,
            now=current.model.now,
            generated_at=current.model.generated_at,
            page_url=base + path,
            image_url=f"{base}{CARD_PATH.format(site_id=site_id)}?lang={lang}",
            image_path=f"{CARD_PATH.format(site_id=site_id)}?lang={lang}",
            og_locale=str(i18n.locale(lang)),
        )
        headers = {"Content-Language": lang, "Cache-Control": PAGE_CACHE}
        if page.policy is not None:
            headers["Content-Security-Policy"] = page.policy
        return HTMLResponse(html, headers=headers)

    for lang in page.languages:

        def localised(request: Request, site_id: str, lang: str = lang) -> Response:
            return monument_page(request, site_id, lang)

        app.add_api_route(
            f"/{lang}/monuments/{{site_id}}",
            localised,
            methods=["GET", "HEAD"],
            include_in_schema=False,
        )

    @app.get(
        CARD_PATH,
        tags=["public"],
        response_class=Response,
        responses={
            200: {"content": {"image/png": {}}, "description": "the card of the state"},
            304: {"description": "Not modified (If-None-Match names the current ETag)"},
            404: {"description": "no such monument in the public status"},
            503: {"description": "Starting: the first status is not rendered yet"},
        },
        summary="A monument's current state as a picture to share (1200 x 630 PNG)",
    )
    def monument_card(request: Request, site_id: str, lang: str | None = None) -> Response:
        chosen = lang if lang in page.languages else page.default_language
        current = page.current(chosen)
        if not current.model.ready:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail="starting: the public status is not ready yet",
                headers={"Retry-After": str(RETRY_S), "Cache-Control": "no-store"},
            )
        found = find_monument(current, site_id, chosen)
        if found is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                detail=f"no monument {site_id!r} in the public status",
                headers={"Cache-Control": NOT_FOUND_CACHE},
            )
        body, etag = cards.get(site_id, chosen, card_of(found, chosen))
        headers = {"ETag": etag, "Cache-Control": CARD_CACHE, "Content-Language": chosen}
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="image/png", headers=headers)

    @app.api_route("/embed/{city}", methods=["GET", "HEAD"], include_in_schema=False)
    def embed(request: Request, city: str, lang: str | None = None) -> Response:
        chosen = (
            lang
            if lang in page.languages
            else page.negotiate(request.headers.get("accept-language"))
        )
        current = page.current(chosen)
        known = next((c for c in current.inputs.catalog.cities if c.id == city), None)
        if known is None:
            return _not_found_in(page, chosen)
        ids = {s.id for s in current.inputs.catalog.sites if s.city == city}
        shown = [s for c in current.model.cities for s in c.sites if s.id in ids]
        banner = current.model.banner
        html = page.templates.render(
            chosen,
            "embed.html",
            city_name=display_name(known.name, chosen),
            city_id=city,
            total=len(shown),
            lit=sum(1 for s in shown if s.state == "lit"),
            ready=current.model.ready,
            campaign=banner.campaign if banner is not None else None,
            generated_at=current.model.generated_at,
            zone=known.zone,
        )
        headers = {
            "Content-Language": chosen,
            "Cache-Control": PAGE_CACHE if current.model.ready else "no-store",
            "Vary": "Accept-Language",
            "Content-Security-Policy": embed_policy,
        }
        if not current.model.ready:
            headers["Retry-After"] = str(RETRY_S)
        return HTMLResponse(html, status_code=200 if current.model.ready else 503, headers=headers)


def _starting(page: PublicPage, lang: str) -> Response:
    """Before the first status after a start: the page's own 503."""
    return HTMLResponse(
        page.render(lang).body,
        status_code=503,
        headers={
            "Content-Language": lang,
            "Retry-After": str(RETRY_S),
            "Cache-Control": "no-store",
        },
    )


def _not_found_in(page: PublicPage, lang: str) -> Response:
    return HTMLResponse(
        page.not_found(lang),
        status_code=404,
        headers={"Content-Language": lang, "Cache-Control": "no-store"},
    )
