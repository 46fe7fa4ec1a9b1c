"""Who is calling the staff API: roles and the authenticated principal.

- `admin` may do everything.
- `coordinator` defines campaigns and schedules, for every city.
- `technician` looks after the devices of the cities in `cities`, and no others.
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

    def covers_city(self, city: str) -> bool:
        """May this user touch the devices of `city`? Admins: any; technicians: theirs."""
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.TECHNICIAN and city in self.cities
