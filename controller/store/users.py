"""Staff users and their API bearer tokens.

A token is `ilm_` followed by 32 random bytes (URL-safe base64). It is shown once, when
it is issued; the database keeps only its SHA-256. A salted slow hash (as for device
passwords) buys nothing here: the token has 256 bits of entropy, and a plain digest lets
the lookup use an index.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from controller.auth import Principal, Role
from controller.store.tables import ApiTokenRow, CityRow, UserRow

TOKEN_PREFIX = "ilm_"
MAX_TOKEN_CHARS = 200
NAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
_CITY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
LAST_USED_RESOLUTION = timedelta(minutes=1)


class UserError(ValueError):
    """A user change that cannot be made; the message says why."""


@dataclass(frozen=True)
class UserView:
    name: str
    role: Role
    cities: tuple[str, ...]
    created_at: datetime
    disabled: bool
    tokens: int
    last_used_at: datetime | None


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(self, name: str, role: str, cities: Iterable[str], now: datetime) -> str:
        """Create a user and return their first token (the only time it is visible)."""
        checked_role = _check_role(role)
        city_ids = _check_cities(checked_role, cities)
        _check_name(name)
        token = new_token()
        try:
            with self.sessions.begin() as s:
                if s.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
                    raise UserError(f"user {name!r} already exists")
                known = set(s.scalars(select(CityRow.id).where(CityRow.id.in_(city_ids))))
                unknown = [c for c in city_ids if c not in known]
                if unknown:
                    raise UserError(
                        f"unknown {'city' if len(unknown) == 1 else 'cities'} "
                        f"{', '.join(repr(c) for c in unknown)}: import the sites file first "
                        "(illuminate sites import FILE)"
                    )
                user = UserRow(
                    name=name,
                    role=checked_role.value,
                    cities=list(city_ids),
                    created_at=now,
                    disabled=False,
                )
                s.add(user)
                s.flush()
                s.add(ApiTokenRow(user_id=user.id, token_hash=token_digest(token), created_at=now))
        except IntegrityError:
            raise UserError(f"user {name!r} already exists") from None
        return token

    def issue_token(self, name: str, now: datetime) -> str:
        """Give an existing user one more token; their other tokens keep working."""
        token = new_token()
        with self.sessions.begin() as s:
            user = s.scalars(select(UserRow).where(UserRow.name == name)).first()
            if user is None:
                raise UserError(f"no user {name!r}")
            s.add(ApiTokenRow(user_id=user.id, token_hash=token_digest(token), created_at=now))
        return token

    def disable(self, name: str) -> None:
        """Refuse every token of this user from now on."""
        with self.sessions.begin() as s:
            done = s.execute(update(UserRow).where(UserRow.name == name).values(disabled=True))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise UserError(f"no user {name!r}")

    def authenticate(self, token: str, now: datetime | None = None) -> Principal | None:
        """The principal a token stands for, or None (unknown token, or user disabled).

        With `now`, the token's last use is recorded (at most once a minute, to spare
        the database a write on every request).
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            return None
        digest = token_digest(token)
        with self.sessions() as s:
            found = s.execute(
                select(UserRow, ApiTokenRow)
                .join(ApiTokenRow, ApiTokenRow.user_id == UserRow.id)
                .where(ApiTokenRow.token_hash == digest)
            ).first()
        if found is None:
            return None
        user, row = found
        if user.disabled:
            return None
        if now is not None and (
            row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION
        ):
            with self.sessions.begin() as s:
                s.execute(
                    update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(last_used_at=now)
                )
        return Principal(name=user.name, role=Role(user.role), cities=tuple(user.cities))

    def list(self) -> list[UserView]:
        with self.sessions() as s:
            counts = (
                select(
                    ApiTokenRow.user_id,
                    func.count().label("n"),
                    func.max(ApiTokenRow.last_used_at).label("last"),
                )
                .group_by(ApiTokenRow.user_id)
                .subquery()
            )
            rows = s.execute(
                select(UserRow, counts.c.n, counts.c.last)
                .outerjoin(counts, counts.c.user_id == UserRow.id)
                .order_by(UserRow.name)
            ).all()
            views = []
            for user, n, last in rows:
                views.append(
                    UserView(
                        name=user.name,
                        role=Role(user.role),
                        cities=tuple(user.cities),
                        created_at=user.created_at,
                        disabled=user.disabled,
                        tokens=int(n or 0),
                        last_used_at=last,
                    )
                )
            return views


def _check_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise UserError(f"unknown role {role!r} (choose one of: {allowed})") from None


def _check_name(name: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise UserError(
            f"{name!r} is not a valid user name (1-64 of lower-case letters, digits, "
            "'.', '_', '@' and '-', starting with a letter or digit)"
        )


def _check_cities(role: Role, cities: Iterable[str]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(cities))
    if role is Role.TECHNICIAN:
        if not unique:
            raise UserError("a technician needs at least one city (--city CITY, repeatable)")
        for city in unique:
            if not _CITY_RE.fullmatch(city):
                raise UserError(f"{city!r} is not a valid city id")
        return unique
    if unique:
        raise UserError(
            f"only technicians are scoped to cities; a {role.value} covers every city "
            "(leave out --city)"
        )
    return ()
