"""The staff console's pages, under /console: server-rendered HTML forms.

Each page takes the signed-in session (`session.require`: else a redirect to the
sign-in page), then the session's grant for one action of the staff API's policy
(`controller.access`; 403 when the role may not), and calls the same service functions
as the API routes: a device of another city is a 404 here too. Every POST checks the
CSRF token and the origin first (`session.check_csrf`).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import yaml
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.access import Action, AuditKind, Grant
from controller.campaigns import TOP, CampaignRejected
from controller.device_health import DeviceHealth, device_health
from controller.device_register_cli import agent_command
from controller.flash import DEFAULT_SECONDS, FLASH, MAX_SECONDS, MIN_SECONDS, RateLimited
from controller.flash import TestRunning as FlashRunning
from controller.registrar import BrokerUnavailable, Issued
from controller.registration import BatchRejected
from controller.rollouts import RolloutRefused
from controller.store.base import Retired, UnknownObject
from controller.store.history import HistoryStore
from controller.web.api import StaffContext, _notify, campaign_summaries, staff_context
from controller.web.api import store_campaign as store_campaign_as
from controller.web.campaigns_api import delete_campaign_as
from controller.web.console import session as sessions
from controller.web.console.session import CSRF_FIELD, PREFIX, Session
from controller.web.console.timeline import city_conflicts, city_days, public_at
from controller.web.console.yaml_lines import Fault, check_yaml, faults_at
from controller.web.device_ops_api import device_ops, health_of, run_test
from controller.web.devices_api import change_device, refusal_items, register_one
from controller.web.history_api import DEFAULT_SPAN, device_history_of
from controller.web.rollouts_api import abort_as, resume_as, rollout_items
from devices.protocol import is_device_id
from schedules.files import ScheduleFileError, parse_document
from schedules.model import Campaign, City, SiteCatalog, display_name, is_id

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The public page's policy, but forms may post to this origin."""
PREVIEW_DAYS = 7
MAX_PREVIEW_DAYS = 31
AUDIT_PAGE = 100
MAX_TRANSITIONS = 500
"""A device page lists its newest lifecycle transitions, this many at most."""
CONFIRM = "confirm"

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _local(at: datetime | None, zone: Any = None) -> str:
    if at is None:
        return "-"
    shown = at.astimezone(zone) if zone is not None else at.astimezone(UTC)
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z")


_env.filters["when"] = _local


def page(
    request: Request,
    name: str,
    found: Session | None,
    status_code: int = 200,
    **values: Any,
) -> HTMLResponse:
    html = _env.get_template(name).render(
        session=found,
        csrf_field=CSRF_FIELD,
        prefix=PREFIX,
        can=_abilities(found),
        **values,
    )
    # every console page is personal (and some show a password once): never stored
    # `same-origin` rather than `no-referrer`: a browser then sends the console's own
    # origin with its form posts (under `no-referrer` it sends `Origin: null`, which
    # the CSRF check refuses, as it refuses every other origin)
    headers = {
        "Content-Security-Policy": CONSOLE_POLICY,
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(html, status_code=status_code, headers=headers)


def _abilities(found: Session | None) -> dict[str, bool]:
    if found is None:
        return {}
    return {action.name.lower(): found.grant(action) is not None for action in Action}


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def _see(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=status.HTTP_303_SEE_OTHER)


def _staff(request: Request) -> StaffContext:
    return staff_context(request)


def _history(request: Request) -> HistoryStore:
    found = getattr(request.app.state, "history", None)
    if found is None:
        raise RuntimeError("the record is not installed: set app.state.history")
    return found  # type: ignore[no-any-return]


def _strength(adapter: str) -> str | None:
    """How strong a device's confirmation is: native devices report each applied step;
    an adapter declares its own (echo or readback)."""
    if adapter == "native":
        return "applied report"
    try:
        from devices.adapters.registry import ADAPTERS
    except ImportError:
        return None
    found = ADAPTERS.get(adapter)
    strength = getattr(found, "strength", None)
    return str(getattr(strength, "value", strength)) if strength is not None else None


def _my_cities(catalog: SiteCatalog, allowed: Grant) -> list[City]:
    return [c for c in catalog.cities if allowed.covers(c.id)]


def _campaigns(staff: StaffContext) -> tuple[Campaign, ...]:
    return staff.stores.campaigns.all()


def _public_timing(request: Request) -> tuple[timedelta, timedelta]:
    public = getattr(request.app.state, "console_public", None)
    grace = getattr(public, "grace", timedelta(seconds=30))
    upcoming = getattr(public, "upcoming", timedelta(hours=24))
    return grace, upcoming


def _agent_snippet(issued: Issued) -> str:
    """The commands that start the native agent; none for a third-party controller."""
    if issued.record.adapter != "native" or issued.mqtt.password is None:
        return ""
    mqtt = issued.mqtt.as_json()
    device_id = issued.record.id
    password_file = Path(f"{device_id}.pw")
    write = f"umask 077; printf '%s\\n' {shlex.quote(issued.mqtt.password)} > {password_file}"
    return "\n".join([write, shlex.join(agent_command(mqtt, device_id, password_file))])


class ConsoleRoute(APIRoute):
    """A console route answers its own refusals: a redirect as it is, an error (403,
    404, ...) as an HTML page. Whatever handlers the app installs for the API's errors,
    the console's stay pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except StarletteHTTPException as exc:
                if exc.status_code < 400:
                    return Response(status_code=exc.status_code, headers=exc.headers)
                found = await run_in_threadpool(sessions.current, request, _staff(request))
                return page(
                    request,
                    "error.html",
                    found,
                    status_code=exc.status_code,
                    code=exc.status_code,
                    detail=exc.detail,
                )

        return handler


def build_console() -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)

    # ---- signing in and out ----------------------------------------------------------

    @router.get("/sign-in")
    def sign_in_page(request: Request) -> Response:
        staff = _staff(request)
        if sessions.current(request, staff) is not None:
            return _see(PREFIX)
        token = sessions.new_presession()
        answer = page(request, "sign_in.html", None, presession=token, error=None)
        sessions.set_cookie(request, answer, sessions.PRESESSION_COOKIE, token)
        return answer

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        staff = _staff(request)
        form = await _form(request)
        sessions.check_presession(request, form)
        token = form.get("token", "").strip()
        opened = await run_in_threadpool(sessions.open_session, staff, token) if token else None
        if opened is None:
            fresh = sessions.new_presession()
            refused = page(
                request,
                "sign_in.html",
                None,
                status_code=401,
                presession=fresh,
                error="That token does not work: it is unknown, expired or revoked.",
            )
            sessions.set_cookie(request, refused, sessions.PRESESSION_COOKIE, fresh)
            return refused
        principal, session_token = opened
        log.info("console: %s signed in", principal.name)
        answer: Response = _see(PREFIX)
        sessions.set_cookie(request, answer, sessions.SESSION_COOKIE, session_token)
        sessions.clear_cookie(request, answer, sessions.PRESESSION_COOKIE)
        return answer

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        sessions.check_csrf(request, found, await _form(request))
        token = request.cookies.get(sessions.SESSION_COOKIE, "")
        await run_in_threadpool(sessions.close_session, staff, found, token)
        log.info("console: %s signed out", found.principal.name)
        answer = _see(sessions.SIGN_IN_PATH)
        sessions.clear_cookie(request, answer, sessions.SESSION_COOKIE)
        return answer

    @router.get("")
    def home(request: Request) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        sessions.permit(found, Action.WHO_AM_I)
        return page(request, "home.html", found)

    # ---- sites and devices -----------------------------------------------------------

    def devices_page(
        request: Request, found: Session, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        staff = _staff(request)
        allowed = sessions.permit(found, Action.READ_DEVICES)
        catalog = staff.stores.registry.catalog()
        records = [
            r
            for r in staff.stores.registry.devices().values()
            if allowed.covers(r.city) and r.active
        ]
        ids = [r.id for r in records]
        views = staff.stores.reports.views(ids)
        latest = staff.stores.outbox.latest(ids)
        ops = device_ops(request)
        flagged = ops.clock_watch.off() if ops.clock_watch is not None else None
        health: dict[str, DeviceHealth] = {}
        for r in records:
            view = views.get(r.id)
            if view is not None:
                health[r.id] = device_health(
                    view,
                    r.city,
                    latest.get(r.id),
                    ops.health.get(r.id),
                    None if flagged is None else r.id in flagged,
                )
        by_site: dict[str, list[Any]] = {}
        for r in sorted(records, key=lambda r: r.id):
            by_site.setdefault(r.site_id, []).append(
                {"record": r, "health": health.get(r.id), "strength": _strength(r.adapter)}
            )
        cities = _my_cities(catalog, allowed)
        sites = [s for s in catalog.sites if allowed.covers(s.city)]
        return page(
            request,
            "devices.html",
            found,
            status_code=status_code,
            cities=cities,
            sites=sites,
            by_site=by_site,
            names=display_name,
            may_edit=found.grant(Action.EDIT_DEVICES) is not None,
            form=values.pop("form", {}),
            errors=values.pop("errors", []),
            **values,
        )

    @router.get("/devices")
    def devices(request: Request) -> Response:
        found = sessions.require(request, _staff(request))
        return devices_page(request, found)

    @router.post("/devices")
    async def register(request: Request) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.EDIT_DEVICES)
        device_id = form.get("id", "").strip()
        site_id = form.get("site", "").strip()
        try:
            issued = await run_in_threadpool(register_one, staff, allowed, device_id, site_id)
        except BatchRejected as exc:
            registered, items = refusal_items(exc, site_id)
            return devices_page(
                request,
                found,
                status_code=409 if registered else 422,
                form=form,
                errors=[(i.path, i.message) for i in items],
            )
        except BrokerUnavailable as exc:
            return devices_page(
                request, found, status_code=503, form=form, errors=[(TOP, str(exc))]
            )
        await run_in_threadpool(_notify, staff.on_change)
        return page(
            request,
            "issued.html",
            found,
            status_code=201,
            issued=issued,
            snippet=_agent_snippet(issued),
            what="registered",
        )

    def device_page(
        request: Request, found: Session, device_id: str, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        staff = _staff(request)
        allowed = sessions.permit(found, Action.READ_DEVICES)
        if not is_device_id(device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no device {device_id!r}")
        record = staff.stores.registry.devices([device_id]).get(device_id)
        if record is None or not allowed.covers(record.city):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no device {device_id!r}")
        ops = device_ops(request)
        health = health_of(staff, ops, allowed, device_id) if record.active else None
        now = staff.clock()
        record_span = device_history_of(
            staff, _history(request), allowed, device_id, now - DEFAULT_SPAN, now
        )
        transitions = list(reversed(staff.stores.outbox.events(device_id)))[:MAX_TRANSITIONS]
        return page(
            request,
            "device.html",
            found,
            status_code=status_code,
            record=record,
            health=health,
            strength=_strength(record.adapter),
            history=record_span,
            transitions=transitions,
            may_edit=found.grant(Action.EDIT_DEVICES) is not None,
            seconds=DEFAULT_SECONDS,
            min_seconds=MIN_SECONDS,
            max_seconds=MAX_SECONDS,
            **values,
        )

    @router.get("/devices/{device_id}")
    def device(request: Request, device_id: str) -> Response:
        found = sessions.require(request, _staff(request))
        return device_page(request, found, device_id)

    @router.post("/devices/{device_id}/test")
    async def test_device(request: Request, device_id: str) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.EDIT_DEVICES)
        if not is_device_id(device_id):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no device {device_id!r}")
        try:
            seconds = float(form.get("seconds") or DEFAULT_SECONDS)
        except ValueError:
            seconds = DEFAULT_SECONDS
        seconds = min(MAX_SECONDS, max(MIN_SECONDS, seconds))
        try:
            answer = await run_in_threadpool(
                run_test, staff, device_ops(request), allowed, device_id, seconds, FLASH
            )
        except RateLimited as exc:
            return device_page(
                request,
                found,
                device_id,
                status_code=429,
                problem=f"{exc.message} (try again in {exc.retry_after} s)",
            )
        except FlashRunning as exc:
            return device_page(request, found, device_id, status_code=409, problem=str(exc))
        return device_page(request, found, device_id, test=answer)

    async def confirmed_change(
        request: Request, device_id: str, what: str
    ) -> tuple[Session, StaffContext, Grant, dict[str, str]] | Response:
        """The session, staff, grant and form of a rotation or decommission; or the
        page that asks to confirm it (nothing changes before that)."""
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.EDIT_DEVICES)
        record = staff.stores.registry.devices([device_id]).get(device_id)
        if record is None or not allowed.covers(record.city):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no device {device_id!r}")
        if form.get(CONFIRM) != "yes":
            return page(
                request,
                "confirm.html",
                found,
                what=what,
                action=f"{PREFIX}/devices/{quote(device_id)}/{what}",
                subject=device_id,
                back=f"{PREFIX}/devices/{quote(device_id)}",
            )
        return found, staff, allowed, form

    @router.post("/devices/{device_id}/rotate")
    async def rotate(request: Request, device_id: str) -> Response:
        asked = await confirmed_change(request, device_id, "rotate")
        if isinstance(asked, Response):
            return asked
        found, staff, allowed, _ = asked
        try:
            issued = await run_in_threadpool(
                change_device,
                staff,
                allowed,
                device_id,
                lambda r, who, now: r.rotate(device_id, who, now),
            )
        except (Retired, UnknownObject, BrokerUnavailable) as exc:
            code = 503 if isinstance(exc, BrokerUnavailable) else 409
            return device_page(request, found, device_id, status_code=code, problem=str(exc))
        await run_in_threadpool(_notify, staff.on_change)
        return page(
            request,
            "issued.html",
            found,
            issued=issued,
            snippet=_agent_snippet(issued),
            what="given a new password",
        )

    @router.post("/devices/{device_id}/decommission")
    async def decommission(request: Request, device_id: str) -> Response:
        asked = await confirmed_change(request, device_id, "decommission")
        if isinstance(asked, Response):
            return asked
        found, staff, allowed, _ = asked
        try:
            await run_in_threadpool(
                change_device,
                staff,
                allowed,
                device_id,
                lambda r, who, now: r.decommission(device_id, who, now),
            )
        except (Retired, UnknownObject, BrokerUnavailable) as exc:
            code = 503 if isinstance(exc, BrokerUnavailable) else 409
            return device_page(request, found, device_id, status_code=code, problem=str(exc))
        await run_in_threadpool(_notify, staff.on_change)
        return _see(f"{PREFIX}/devices/{quote(device_id)}")

    # ---- campaigns -------------------------------------------------------------------

    def campaigns_page(
        request: Request, found: Session, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        staff = _staff(request)
        sessions.permit(found, Action.READ_CAMPAIGNS)
        records = {r.id: r for r in staff.stores.campaigns.records()}
        rows = [
            {"summary": s, "override": bool(records[s.id].body.get("override"))}
            for s in campaign_summaries(staff)
        ]
        text = values.pop("text", "")
        faults: Sequence[Fault] = values.pop("faults", ())
        return page(
            request,
            "campaigns.html",
            found,
            status_code=status_code,
            rows=rows,
            names=display_name,
            text=text,
            lines=_lines(text, faults),
            faults=faults,
            may_edit=found.grant(Action.EDIT_CAMPAIGNS) is not None,
            **values,
        )

    @router.get("/campaigns")
    def campaigns(request: Request, edit: str | None = None) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        sessions.permit(found, Action.READ_CAMPAIGNS)
        text = ""
        if edit is not None and is_id(edit):
            record = staff.stores.campaigns.record(edit)
            if record is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no campaign {edit!r}")
            text = yaml.safe_dump(record.body, sort_keys=False, allow_unicode=True)
        return campaigns_page(request, found, text=text, editing=edit)

    @router.post("/campaigns")
    async def upload_campaign(request: Request) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.EDIT_CAMPAIGNS)
        text = form.get("yaml", "").replace("\r\n", "\n")
        checked = check_yaml(text)
        if not isinstance(checked, Campaign):
            return campaigns_page(request, found, status_code=422, text=text, faults=checked)
        try:
            created, _body = await run_in_threadpool(
                store_campaign_as, staff, allowed.principal, checked
            )
        except CampaignRejected as exc:
            return campaigns_page(
                request,
                found,
                status_code=422,
                text=text,
                faults=faults_at(text, exc.path, exc.message),
            )
        await run_in_threadpool(_notify, staff.on_change)
        what = "created" if created else "replaced"
        return campaigns_page(request, found, notice=f"Campaign {checked.id} {what}.")

    @router.post("/campaigns/{campaign_id}/delete")
    async def delete_campaign(request: Request, campaign_id: str) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.EDIT_CAMPAIGNS)
        if not is_id(campaign_id) or staff.stores.campaigns.record(campaign_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no campaign {campaign_id!r}")
        if form.get(CONFIRM) != "yes":
            return page(
                request,
                "confirm.html",
                found,
                what="delete",
                action=f"{PREFIX}/campaigns/{campaign_id}/delete",
                subject=campaign_id,
                back=f"{PREFIX}/campaigns",
            )
        await run_in_threadpool(delete_campaign_as, staff, allowed.principal, campaign_id)
        await run_in_threadpool(_notify, staff.on_change)
        return campaigns_page(request, found, notice=f"Campaign {campaign_id} deleted.")

    # ---- the timeline preview --------------------------------------------------------

    @router.get("/timeline")
    def timeline(
        request: Request,
        city: str | None = None,
        start: str | None = None,
        days: str | None = None,
        at: str | None = None,
    ) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        sessions.permit(found, Action.READ_CAMPAIGNS)
        catalog = staff.stores.registry.catalog()
        if not catalog.cities:
            return page(request, "timeline.html", found, city=None, cities=[])
        chosen = next((c for c in catalog.cities if c.id == city), catalog.cities[0])
        now = staff.clock().astimezone(chosen.zone)
        problems = []
        first = now.date()
        if start:
            try:
                first = date.fromisoformat(start)
            except ValueError:
                problems.append(f"start: not a date (YYYY-MM-DD): {start!r}")
        span = PREVIEW_DAYS
        if days:
            try:
                span = max(1, min(MAX_PREVIEW_DAYS, int(days)))
            except ValueError:
                problems.append(f"days: not a whole number: {days!r}")
        instant = now
        if at:
            try:
                parsed = datetime.fromisoformat(at)
                instant = parsed.replace(tzinfo=chosen.zone) if parsed.tzinfo is None else parsed
            except ValueError:
                problems.append(f"at: not a local date and time (YYYY-MM-DDTHH:MM): {at!r}")
        campaigns = _campaigns(staff)
        grace, upcoming = _public_timing(request)
        return page(
            request,
            "timeline.html",
            found,
            city=chosen,
            cities=catalog.cities,
            names=display_name,
            first=first,
            days=span,
            day_rows=city_days(campaigns, catalog, chosen, first, span),
            conflicts=city_conflicts(campaigns, catalog, chosen, first, span),
            at=instant,
            at_value=instant.astimezone(chosen.zone).strftime("%Y-%m-%dT%H:%M"),
            public=public_at(campaigns, catalog, chosen, instant, grace, upcoming),
            problems=problems,
        )

    # ---- overrides -------------------------------------------------------------------

    def overrides_page(
        request: Request, found: Session, status_code: int = 200, **values: Any
    ) -> HTMLResponse:
        staff = _staff(request)
        sessions.permit(found, Action.OVERRIDE)
        catalog = staff.stores.registry.catalog()
        active = [c for c in _campaigns(staff) if c.override]
        zone = catalog.cities[0].zone if catalog.cities else UTC
        now = staff.clock().astimezone(zone)
        defaults = {
            "date": now.date().isoformat(),
            "start": now.strftime("%H:%M"),
            "end": "06:00",
            "targets": "all",
            "on": "off",
            "color": "#FFFFFF",
        }
        form = {**defaults, **values.pop("form", {})}
        return page(
            request,
            "overrides.html",
            found,
            status_code=status_code,
            cities=catalog.cities,
            names=display_name,
            overrides=active,
            form=form,
            errors=values.pop("errors", []),
            **values,
        )

    @router.get("/overrides")
    def overrides(request: Request) -> Response:
        found = sessions.require(request, _staff(request))
        return overrides_page(request, found)

    @router.post("/overrides")
    async def add_override(request: Request) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.OVERRIDE)
        body, errors = _override_body(form, staff.clock())
        if body is None:
            return overrides_page(request, found, status_code=422, form=form, errors=errors)
        all_off = body["windows"][0]["targets"] == {"all": True} and not body["on"]
        if all_off and form.get(CONFIRM) != "yes":
            return overrides_page(request, found, form=form, confirm_all_off=True)
        try:
            campaign = parse_document(Campaign, body, "override")
        except ScheduleFileError as exc:
            items = [line.removeprefix("override: ") for line in str(exc).splitlines()]
            return overrides_page(request, found, status_code=422, form=form, errors=items)
        try:
            await run_in_threadpool(store_campaign_as, staff, allowed.principal, campaign)
        except CampaignRejected as exc:
            return overrides_page(request, found, status_code=422, form=form, errors=[str(exc)])
        await run_in_threadpool(_notify, staff.on_change)
        return overrides_page(request, found, notice=f"Override {campaign.id} is in force.")

    # ---- staged rollouts --------------------------------------------------------------

    def rollouts_page(request: Request, found: Session, **values: Any) -> HTMLResponse:
        staff = _staff(request)
        sessions.permit(found, Action.READ_CAMPAIGNS)
        return page(
            request,
            "rollouts.html",
            found,
            rollouts=rollout_items(staff),
            may_control=found.grant(Action.CONTROL_ROLLOUTS) is not None,
            **values,
        )

    @router.get("/rollouts")
    def rollouts(request: Request) -> Response:
        return rollouts_page(request, sessions.require(request, _staff(request)))

    @router.post("/rollouts/{rollout_id}/{verb}")
    async def control_rollout(request: Request, rollout_id: str, verb: str) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        form = await _form(request)
        sessions.check_csrf(request, found, form)
        allowed = sessions.permit(found, Action.CONTROL_ROLLOUTS)
        if verb not in ("resume", "abort") or not rollout_id.isdigit() or len(rollout_id) > 18:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such rollout action")
        number = int(rollout_id)
        if verb == "abort" and form.get(CONFIRM) != "yes":
            return page(
                request,
                "confirm.html",
                found,
                what="abort rollout",
                action=f"{PREFIX}/rollouts/{number}/abort",
                subject=str(number),
                back=f"{PREFIX}/rollouts",
            )
        try:
            if verb == "resume":
                await run_in_threadpool(resume_as, staff, allowed, number)
                notice = f"Rollout {number} resumed."
            else:
                _found, restored = await run_in_threadpool(abort_as, staff, allowed, number)
                notice = f"Rollout {number} aborted" + (
                    "; the campaign is back as it was." if restored else "."
                )
        except RolloutRefused as exc:
            if exc.missing:
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc)) from None
            return rollouts_page(request, found, status_code=409, error=str(exc))
        await run_in_threadpool(_notify, staff.on_change)
        return rollouts_page(request, found, notice=notice)

    # ---- the audit log ---------------------------------------------------------------

    @router.get("/audit")
    def audit_log(request: Request, before: str | None = None, kind: str | None = None) -> Response:
        staff = _staff(request)
        found = sessions.require(request, staff)
        allowed = sessions.permit(found, Action.READ_AUDIT)
        older = int(before) if before and before.isdigit() and len(before) < 19 else None
        kinds = allowed.audit_kinds
        if kind:
            kinds = kinds & {k for k in AuditKind if k.value == kind}
        entries = staff.audit.entries(kinds, older, AUDIT_PAGE) if kinds else []
        more = len(entries) == AUDIT_PAGE and entries[-1].id > 1
        return page(
            request,
            "audit.html",
            found,
            entries=entries,
            next_before=entries[-1].id if more else None,
            kinds=sorted(allowed.audit_kinds),
            kind=kind,
        )

    return router


def _lines(text: str, faults: Sequence[Fault]) -> list[tuple[int, str, list[Fault]]]:
    """The text's lines (1-based) with the faults that belong to each."""
    lines = text.split("\n") if text else []
    if lines and lines[-1] == "":
        lines.pop()
    out = [(n, line, [f for f in faults if f.line == n]) for n, line in enumerate(lines, 1)]
    beyond = [f for f in faults if f.line > len(lines)]
    if beyond:
        out.append((len(lines) + 1, "", beyond))
    return out


def _override_body(form: dict[str, str], now: datetime) -> tuple[dict[str, Any] | None, list[str]]:
    """The override campaign the form describes (the domain checks it next)."""
    errors = []
    reason = form.get("reason", "").strip()
    if not reason:
        errors.append("reason: say why (it is kept with the override)")
    try:
        day = date.fromisoformat(form.get("date", ""))
    except ValueError:
        errors.append("date: give a date (YYYY-MM-DD)")
        day = now.date()
    for name in ("start", "end"):
        try:
            time.fromisoformat(form.get(name, ""))
        except ValueError:
            errors.append(f"{name}: give a time (HH:MM)")
    targets: dict[str, Any]
    if form.get("targets", "all") == "all":
        targets = {"all": True}
    else:
        cities = [c.strip() for c in form.get("cities", "").split(",") if c.strip()]
        if not cities:
            errors.append("cities: name at least one city, or choose all sites")
        targets = {"cities": cities}
    if errors:
        return None, errors
    on = form.get("on") == "on"
    stamp = now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    body: dict[str, Any] = {
        "id": form.get("id", "").strip() or f"override-{stamp}",
        "title": {"en": form.get("title", "").strip() or ("Lights on" if on else "All off")},
        "on": on,
        "override": True,
        "reason": reason,
        "windows": [
            {
                "targets": targets,
                "dates": [day.isoformat()],
                "start": {"at": form["start"]},
                "end": {"at": form["end"]},
            }
        ],
    }
    if on:
        body["color"] = form.get("color", "#FFFFFF")
    return body, []
