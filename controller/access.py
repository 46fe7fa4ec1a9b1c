"""Who may do what in the staff API: one table, `POLICY`, and the grants it gives.

Every staff route names one `Action`; `grant(principal, action)` answers whether the
principal may take it and over which cities:

- admins: everything, everywhere;
- coordinators: campaigns, overrides and rollouts, and reading every site (and device);
- technicians: the sites and devices of their own cities, and no others.

A role the table leaves out of an action is refused (403). A role allowed only in its
own cities gets a grant that covers those cities: an object of another city is answered
as if it did not exist (404), so its existence is not disclosed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from controller.auth import Principal, Role


class Action(StrEnum):
    WHO_AM_I = "who-am-i"
    READ_SITES = "read-sites"
    EDIT_SITES = "edit-sites"
    READ_DEVICES = "read-devices"
    EDIT_DEVICES = "edit-devices"
    """Register, rotate, decommission or test one device of a site."""
    IMPORT_DEVICES = "import-devices"
    """Register devices in bulk, at any site."""
    READ_CAMPAIGNS = "read-campaigns"
    EDIT_CAMPAIGNS = "edit-campaigns"
    OVERRIDE = "override"
    CONTROL_ROLLOUTS = "control-rollouts"
    """Resume or abort a staged rollout of a campaign change."""
    READ_AUDIT = "read-audit"


class AuditKind(StrEnum):
    """What an audit entry is about."""

    CAMPAIGN = "campaign"
    OVERRIDE = "override"
    DEVICE = "device"
    SITE = "site"


@dataclass(frozen=True)
class Rule:
    everywhere: frozenset[Role]
    """Roles allowed the action in every city."""
    own_cities: frozenset[Role] = frozenset()
    """Roles allowed the action in their own cities only."""


_ALL = frozenset(Role)
_ADMIN = frozenset({Role.ADMIN})
_STAFF = frozenset({Role.ADMIN, Role.COORDINATOR})
_TECHNICIAN = frozenset({Role.TECHNICIAN})

POLICY: Mapping[Action, Rule] = {
    Action.WHO_AM_I: Rule(everywhere=_ALL),
    Action.READ_SITES: Rule(everywhere=_STAFF, own_cities=_TECHNICIAN),
    Action.EDIT_SITES: Rule(everywhere=_ADMIN, own_cities=_TECHNICIAN),
    Action.READ_DEVICES: Rule(everywhere=_STAFF, own_cities=_TECHNICIAN),
    Action.EDIT_DEVICES: Rule(everywhere=_ADMIN, own_cities=_TECHNICIAN),
    Action.IMPORT_DEVICES: Rule(everywhere=_ADMIN),
    Action.READ_CAMPAIGNS: Rule(everywhere=_STAFF),
    Action.EDIT_CAMPAIGNS: Rule(everywhere=_STAFF),
    Action.OVERRIDE: Rule(everywhere=_STAFF),
    Action.CONTROL_ROLLOUTS: Rule(everywhere=_STAFF),
    Action.READ_AUDIT: Rule(everywhere=_STAFF),
}

AUDIT_KINDS: Mapping[Role, frozenset[AuditKind]] = {
    Role.ADMIN: frozenset(AuditKind),
    Role.COORDINATOR: frozenset({AuditKind.CAMPAIGN}),
}
"""The audit entries each role may read (with READ_AUDIT): coordinators, campaigns only."""


@dataclass(frozen=True)
class Grant:
    """A principal's permission to take an action, over `cities` (None: every city)."""

    principal: Principal
    action: Action
    cities: frozenset[str] | None

    def covers(self, city: str | None) -> bool:
        """May the action touch an object of `city`? (None: an object of no city, which
        only an every-city grant covers.)"""
        if self.cities is None:
            return True
        return city is not None and city in self.cities

    @property
    def audit_kinds(self) -> frozenset[AuditKind]:
        return AUDIT_KINDS.get(self.principal.role, frozenset())


def grant(principal: Principal, action: Action) -> Grant | None:
    """The principal's grant for the action, or None when their role may not take it."""
    rule = POLICY[action]
    if principal.role in rule.everywhere:
        return Grant(principal, action, None)
    if principal.role in rule.own_cities:
        return Grant(principal, action, frozenset(principal.cities))
    return None
