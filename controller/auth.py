"""Who is calling the staff API: roles and the authenticated principal.

- `admin` may do everything.
- `coordinator` defines campaigns and schedules, for every city.
- `technician` looks after the sites and devices of the cities in `cities`, and no others.

What each role may do is the table in `controller/access.py`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Role(StrEnum):
    ADMIN = "admin"
    COORDINATOR = "coordinator"
    TECHNICIAN = "technician"


class Principal(BaseModel):
    """An authenticated staff user, as the API sees them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    cities: tuple[str, ...] = ()
