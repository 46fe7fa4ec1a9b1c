"""Staff users and their API bearer tokens.

A token is `ilm_` followed by 32 random bytes (URL-safe base64). It is shown once, when
it is issued; the database keeps only its SHA-256, and its first characters as a `hint`
(`ilm_` and 8 more, 48 of its 256 bits) so that its holder can tell it apart in
`illuminate users tokens NAME`. A salted slow hash (as for device passwords) buys nothing
here: the token has 256 bits of entropy, and a plain digest lets the lookup use an index.

A token may carry an expiry, and may be revoked; from then on it is refused. Revoked
tokens stay listed, with the instant of their revocation.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from sqlalchemy import Select, and_, func, or_, select, update
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
HINT_CHARS = len(TOKEN_PREFIX) + 8
_DURATION_RE = re.compile(r"^(\d{1,6})([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
EXPIRY_FORMS = (
    "a duration (30m, 12h, 90d, 2w), a date (2027-01-31, meaning 00:00 UTC that day) "
    "or an instant with its offset (2027-01-31T18:00+01:00)"
)


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
    """Tokens that still work (neither expired nor revoked)."""
    last_used_at: datetime | None


class TokenState(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True)
class TokenView:
    """A token as `users tokens` shows it: never the token itself."""

    id: int
    hint: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    state: TokenState


def token_state(row: ApiTokenRow, now: datetime) -> TokenState:
    if row.revoked_at is not None:
        return TokenState.REVOKED
    if row.expires_at is not None and now >= row.expires_at:
        return TokenState.EXPIRED
    return TokenState.ACTIVE


def expiry_from(text: str, now: datetime) -> datetime:
    """The instant a token given `--expires TEXT` at `now` stops working (UTC).

    Raises UserError for anything else, or for an instant that is not after `now`.
    """
    value = text.strip()
    found = _DURATION_RE.fullmatch(value)
    if found:
        amount, unit = int(found.group(1)), found.group(2)
        if amount == 0:
            raise UserError(f"--expires {text!r}: a duration must be longer than zero")
        at = now + timedelta(**{_UNITS[unit]: amount})
    else:
        at = _instant(text, value)
    at = at.astimezone(UTC)
    if at <= now:
        raise UserError(f"--expires {text!r}: {at:%Y-%m-%d %H:%M} UTC is not in the future")
    return at


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(
        self,
        name: str,
        role: str,
        cities: Iterable[str],
        now: datetime,
        expires_at: datetime | None = None,
    ) -> str:
        """Create a user and return their first token (the only time it is visible)."""
        _check_expiry(expires_at, now)
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
                s.add(_token_row(user.id, token, now, expires_at))
        except IntegrityError:
            raise UserError(f"user {name!r} already exists") from None
        return token

    def issue_token(self, name: str, now: datetime, expires_at: datetime | None = None) -> str:
        """Give an existing user one more token; their other tokens keep working."""
        _check_expiry(expires_at, now)
        token = new_token()
        with self.sessions.begin() as s:
            user = _user(s, name)
            s.add(_token_row(user.id, token, now, expires_at))
        return token

    def tokens(self, name: str, now: datetime) -> list[TokenView]:
        """Every token of the user, oldest first, with its state at `now`."""
        with self.sessions() as s:
            user = _user(s, name)
            rows = s.scalars(
                select(ApiTokenRow).where(ApiTokenRow.user_id == user.id).order_by(ApiTokenRow.id)
            ).all()
            return [
                TokenView(
                    id=r.id,
                    hint=r.hint,
                    created_at=r.created_at,
                    expires_at=r.expires_at,
                    revoked_at=r.revoked_at,
                    last_used_at=r.last_used_at,
                    state=token_state(r, now),
                )
                for r in rows
            ]

    def revoke(self, name: str, token: str | None, now: datetime) -> int:
        """Revoke one token of the user (`token`: its id or its hint, as `tokens`
        shows them), or with None every one of theirs; how many were revoked.

        A token already revoked is not revoked again; naming one is an error.
        """
        with self.sessions.begin() as s:
            user = _user(s, name)
            query = select(ApiTokenRow).where(ApiTokenRow.user_id == user.id)
            if token is None:
                rows = list(s.scalars(query.where(ApiTokenRow.revoked_at.is_(None))))
            else:
                rows = [_one_token(s, query, name, token)]
            for row in rows:
                row.revoked_at = now
            return len(rows)

    def disable(self, name: str) -> None:
        """Refuse every token of this user from now on."""
        with self.sessions.begin() as s:
            done = s.execute(update(UserRow).where(UserRow.name == name).values(disabled=True))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise UserError(f"no user {name!r}")

    def authenticate(self, token: str, now: datetime, record_use: bool = True) -> Principal | None:
        """The principal a token stands for at `now`, or None (unknown, expired or
        revoked token, or user disabled).

        With `record_use`, the token's last use is recorded (at most once a minute, to
        spare the database a write on every request).
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
        if user.disabled or token_state(row, now) is not TokenState.ACTIVE:
            return None
        if record_use and (
            row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION
        ):
            with self.sessions.begin() as s:
                s.execute(
                    update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(last_used_at=now)
                )
        return Principal(name=user.name, role=Role(user.role), cities=tuple(user.cities))

    def list(self, now: datetime) -> list[UserView]:
        """Every user, by name, with how many of their tokens work at `now`."""
        with self.sessions() as s:
            working = and_(
                ApiTokenRow.revoked_at.is_(None),
                or_(ApiTokenRow.expires_at.is_(None), ApiTokenRow.expires_at > now),
            )
            counts = (
                select(
                    ApiTokenRow.user_id,
                    func.count().filter(working).label("n"),
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


def _instant(text: str, value: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"--expires {text!r}: use {EXPIRY_FORMS}") from None
    if at.tzinfo is None:
        raise UserError(
            f"--expires {text!r}: give the instant's offset (for example "
            f"{value}Z or {value}+01:00), or use a date or a duration"
        )
    return at


def _token_row(user_id: int, token: str, now: datetime, expires_at: datetime | None) -> ApiTokenRow:
    return ApiTokenRow(
        user_id=user_id,
        token_hash=token_digest(token),
        hint=token[:HINT_CHARS],
        created_at=now,
        expires_at=expires_at,
    )


def _user(s: Session, name: str) -> UserRow:
    user = s.scalars(select(UserRow).where(UserRow.name == name)).first()
    if user is None:
        raise UserError(f"no user {name!r}")
    return user


def _one_token(s: Session, query: Select[ApiTokenRow], name: str, ref: str) -> ApiTokenRow:
    ref = ref.strip()
    if ref.isdigit():
        found = list(s.scalars(query.where(ApiTokenRow.id == int(ref))))
    elif ref.startswith(TOKEN_PREFIX) and len(ref) > len(TOKEN_PREFIX):
        found = [r for r in s.scalars(query) if r.hint and r.hint.startswith(ref[:HINT_CHARS])]
    else:
        raise UserError(
            f"{ref!r} names no token: give its id or its hint (ilm_...), "
            f"as `illuminate users tokens {name}` shows them"
        )
    if not found:
        raise UserError(
            f"user {name!r} has no token {ref!r} (see `illuminate users tokens {name}`)"
        )
    if len(found) > 1:
        ids = ", ".join(str(r.id) for r in found)
        raise UserError(f"{ref!r} matches several tokens of {name!r} ({ids}): give its id")
    if found[0].revoked_at is not None:
        raise UserError(f"token {found[0].id} of {name!r} is already revoked")
    return found[0]


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is None:
        return
    if expires_at.tzinfo is None:
        raise UserError("a token's expiry needs an aware instant")
    if expires_at <= now:
        raise UserError(f"the expiry {expires_at:%Y-%m-%d %H:%M} UTC is not in the future")


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
