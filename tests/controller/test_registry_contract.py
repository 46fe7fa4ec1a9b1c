"""The registry's edits, one contract on memory, SQLite and PostgreSQL: device records,
rotation, decommissioning, site edits and removal, campaign removal; each with its
audit entries in the same transaction, and a `before_commit` that fails undoing all."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from controller.access import AuditKind
from controller.lifecycle import CommandState as S
from controller.store.audit import AuditRecord
from controller.store.base import InUse, NewDevice, NewVersion, Retired, Stores, UnknownObject
from controller.store.memory import memory_stores
from schedules.model import Photo, Site
from tests.controller.test_store_contract import CAMPAIGN, CATALOG, NOW
from tests.support.stores import SQL_KINDS, sql_database

LATER = NOW + timedelta(hours=1)


@pytest.fixture(params=["memory", *SQL_KINDS])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "memory":
        found = memory_stores()
        found.registry.import_catalog(CATALOG)
        yield found
        return
    with sql_database(request.param, tmp_path) as (_, _, found):
        found.registry.import_catalog(CATALOG)
        yield found


def entry(action: str, subject: str, kind: AuditKind = AuditKind.DEVICE) -> AuditRecord:
    return AuditRecord(at=NOW, actor="tom", kind=kind, action=action, subject=subject, city="ypres")


def actions(stores: Stores) -> list[str]:
    assert stores.audit is not None
    return [e.record.action for e in reversed(stores.audit.entries())]


class Refused(Exception):
    pass


def refuse() -> None:
    raise Refused("the broker said no")


def test_device_records_and_the_audit_entry_of_a_registration(stores: Stores) -> None:
    device = NewDevice("gate-ctl", "menin-gate", "sha256$00$00", "native", {"universe": 1})
    stores.registry.add_devices([device], NOW, [entry("registered", "gate-ctl")])
    record = stores.registry.devices()["gate-ctl"]
    assert (record.site_id, record.city, record.adapter, record.config) == (
        "menin-gate",
        "ypres",
        "native",
        {"universe": 1},
    )
    assert (record.created_at, record.credentials_at, record.decommissioned_at) == (NOW, None, None)
    assert record.active
    assert stores.registry.devices(["gate-ctl", "nothing"]) == {"gate-ctl": record}
    assert actions(stores) == ["registered"]
    # a hook that fails stores neither the devices nor their entries
    with pytest.raises(Refused):
        stores.registry.add_devices(
            [NewDevice("other-ctl", "menin-gate")], NOW, [entry("registered", "x")], refuse
        )
    assert stores.registry.device_ids() == {"gate-ctl"}
    assert actions(stores) == ["registered"]


def test_rotation_replaces_the_secret_and_marks_the_device_offline(stores: Stores) -> None:
    stores.registry.add_devices([NewDevice("gate-ctl", "menin-gate", "old")], NOW)
    view = stores.reports.views()["gate-ctl"]
    stores.reports.save([replace(view, online=True, status_at=NOW)])
    revision = stores.registry.revision()
    with pytest.raises(Refused):
        stores.registry.set_secret("gate-ctl", "new", LATER, [entry("rotated", "gate-ctl")], refuse)
    assert stores.reports.views()["gate-ctl"].online is True
    assert stores.registry.devices()["gate-ctl"].credentials_at is None
    assert actions(stores) == []
    stores.registry.set_secret("gate-ctl", "new", LATER, [entry("rotated", "gate-ctl")])
    assert stores.registry.revision() > revision
    view = stores.reports.views()["gate-ctl"]
    assert (view.online, view.status_at) == (False, LATER)
    assert stores.registry.devices()["gate-ctl"].credentials_at == LATER
    assert actions(stores) == ["rotated"]
    with pytest.raises(UnknownObject):
        stores.registry.set_secret("nothing", "x", LATER)


def test_decommissioning_keeps_the_record_and_history_and_leaves_the_views(
    stores: Stores,
) -> None:
    stores.registry.add_devices([NewDevice("gate-ctl", "menin-gate", "old")], NOW)
    (command,) = stores.outbox.add_versions([NewVersion("gate-ctl", 1, "{}", NOW, None)])
    with pytest.raises(Refused):
        stores.registry.decommission("gate-ctl", LATER, [entry("decommissioned", "x")], refuse)
    assert "gate-ctl" in stores.reports.views()
    assert stores.outbox.latest()["gate-ctl"].state is S.PENDING
    stores.registry.decommission("gate-ctl", LATER, [entry("decommissioned", "gate-ctl")])
    assert "gate-ctl" not in stores.reports.views()
    assert stores.reports.views(["gate-ctl"]) == {}
    assert stores.registry.device_ids() == {"gate-ctl"}  # the id stays taken
    record = stores.registry.devices()["gate-ctl"]
    assert record.decommissioned_at == LATER and not record.active
    latest = stores.outbox.latest()["gate-ctl"]
    assert (latest.id, latest.state, latest.reason) == (
        command.id,
        S.SUPERSEDED,
        "device decommissioned",
    )
    assert [e.to_state for e in stores.outbox.events("gate-ctl")] == [S.PENDING, S.SUPERSEDED]
    assert actions(stores) == ["decommissioned"]
    with pytest.raises(Retired):
        stores.registry.decommission("gate-ctl", LATER)
    with pytest.raises(Retired):
        stores.registry.set_secret("gate-ctl", "x", LATER)
    with pytest.raises(UnknownObject):
        stores.registry.decommission("nothing", LATER)


def test_sites_are_put_and_removed(stores: Stores) -> None:
    site = Site(id="st-martin", city="ypres", name={"en": "St Martin"}, lat=50.85, lon=2.88)
    assert stores.registry.put_site(site, NOW, [entry("created", "st-martin", AuditKind.SITE)])
    moved = site.model_copy(update={"lat": 50.86})
    assert not stores.registry.put_site(moved, NOW)
    assert {s.id: s for s in stores.registry.catalog().sites}["st-martin"].lat == 50.86
    with pytest.raises(UnknownObject):
        stores.registry.put_site(site.model_copy(update={"city": "atlantis"}), NOW)

    stores.registry.add_devices([NewDevice("sm-ctl", "st-martin")], NOW)
    with pytest.raises(InUse) as busy:
        stores.registry.remove_site("st-martin", NOW)
    assert busy.value.devices == ("sm-ctl",)
    stores.registry.decommission("sm-ctl", NOW)
    stores.registry.remove_site("st-martin", NOW, [entry("deleted", "st-martin", AuditKind.SITE)])
    assert "st-martin" not in {s.id for s in stores.registry.catalog().sites}
    assert stores.registry.devices()["sm-ctl"].city == "ypres"  # history still resolves
    with pytest.raises(UnknownObject):
        stores.registry.remove_site("st-martin", NOW)
    # no new device on a removed site
    with pytest.raises(ValueError, match="unknown site 'st-martin'"):
        stores.registry.add_devices([NewDevice("new-ctl", "st-martin")], NOW)
    # it can come back
    assert stores.registry.put_site(site, NOW)
    assert actions(stores) == ["created", "deleted"]


def test_a_sites_photo_is_kept_by_put_and_by_import(stores: Stores) -> None:
    photo = Photo(
        src="/static/photos/st-martin.jpg", alt={"en": "St Martin's tower", "fr": "La tour"}
    )
    site = Site(
        id="st-martin", city="ypres", name={"en": "St Martin"}, lat=50.85, lon=2.88, photo=photo
    )
    stores.registry.put_site(site, NOW)
    assert {s.id: s for s in stores.registry.catalog().sites}["st-martin"].photo == photo
    stores.registry.import_catalog(CATALOG.model_copy(update={"sites": (*CATALOG.sites, site)}))
    assert {s.id: s for s in stores.registry.catalog().sites}["st-martin"] == site
    stores.registry.put_site(site.model_copy(update={"photo": None}), NOW)
    assert {s.id: s for s in stores.registry.catalog().sites}["st-martin"].photo is None


def test_campaigns_are_deleted(stores: Stores) -> None:
    stores.campaigns.put(CAMPAIGN, NOW)
    revision = stores.campaigns.revision()
    record = AuditRecord(
        at=NOW, actor="cora", kind=AuditKind.CAMPAIGN, action="deleted", subject="blue-heart"
    )
    assert stores.campaigns.delete("blue-heart", NOW, [record])
    assert stores.campaigns.revision() > revision
    assert stores.campaigns.all() == ()
    assert stores.campaigns.record("blue-heart") is None
    assert not stores.campaigns.delete("blue-heart", NOW, [record])
    assert actions(stores) == ["deleted"]
