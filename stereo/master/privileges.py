"""Who the workers run as (--user, --group) and with what umask (--umask): resolved once, before
anything is bound, and applied by the kernel when each worker (and the bridge) is started.

The master itself keeps its identity: it binds privileged ports before any worker starts, owns
the control socket and the pid file, and signals the workers. A worker becomes the user in the
child between fork and exec (subprocess's ``user``/``group``/``extra_groups``), with the user's
supplementary groups as initgroups(3) would give them, so the app never runs privileged, not even
while it is imported.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

MAX_UMASK = 0o777


@dataclass(frozen=True, slots=True)
class Identity:
    """The uid, gid and supplementary groups a worker gets; None leaves that one as it is."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    description: str  # for the master's log: "nobody (uid 65534), group nogroup (gid 65534)"


@dataclass(frozen=True, slots=True)
class SpawnOptions:
    """What every child the master starts is given: an identity and a umask (None: inherited)."""

    identity: Identity | None = None
    umask: int | None = None

    def popen_options(self) -> dict[str, Any]:
        """Keyword arguments for ``subprocess.Popen`` (and ``trio.run_process``)."""
        options: dict[str, Any] = {}
        if self.identity is not None:
            if self.identity.groups is not None:
                options["extra_groups"] = list(self.identity.groups)
            if self.identity.gid is not None:
                options["group"] = self.identity.gid
            if self.identity.uid is not None:
                options["user"] = self.identity.uid
        if self.umask is not None:
            options["umask"] = self.umask
        return options

    def describe(self) -> str | None:
        """A line for the master's log, or None when the workers inherit everything."""
        parts = [self.identity.description] if self.identity is not None else []
        if self.umask is not None:
            parts.append(f"umask {self.umask:03o}")
        return f"workers run as {', '.join(parts)}" if parts else None


INHERIT = SpawnOptions()  # the master's own user, group and umask


def parse_umask(text: str) -> int:
    """An octal umask as gunicorn and the shell take it: ``022``, ``0o022``, ``0``. ValueError
    if it is not octal digits (the range is :func:`check_umask`'s)."""
    digits = text.strip().lower().removeprefix("0o")
    if not digits or any(ch not in "01234567" for ch in digits):
        raise ValueError(f"{text[:40]!r} is not an octal umask such as 022")
    return int(digits, 8)


def check_umask(value: int | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_UMASK
    ):
        shown = oct(value) if isinstance(value, int) else repr(value)
        raise ConfigError(f"--umask {shown}: must be an octal mask from 0 to 0777")


def _user_entry(user: str) -> pwd.struct_passwd | None:
    """The passwd entry of a name or numeric uid; None for a uid with no entry."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        pass
    if user.isdecimal():
        try:
            return pwd.getpwuid(int(user))
        except KeyError:
            return None
    raise ConfigError(f"--user {user!r}: no such user")


def _group_id(group: str) -> tuple[int, str]:
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        if not group.isdecimal():
            raise ConfigError(f"--group {group!r}: no such group") from None
        gid = int(group)
        try:
            return gid, grp.getgrgid(gid).gr_name
        except KeyError:
            return gid, str(gid)
    return entry.gr_gid, entry.gr_name


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """The identity for ``--user`` / ``--group`` (names or numeric ids): the user's primary group
    unless ``--group`` is given, and the user's supplementary groups. ConfigError if one does not
    exist, or if this process is not root (only root may run processes as someone else)."""
    if user is None and group is None:
        return None
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    parts = []
    if user is not None:
        entry = _user_entry(user)
        if entry is None:  # a numeric uid without an entry: it has no primary group to take
            if group is None:
                raise ConfigError(f"--user {user}: uid {user} has no passwd entry; give --group")
            uid, name = int(user), user
        else:
            uid, name = entry.pw_uid, entry.pw_name
            gid = entry.pw_gid
        parts.append(f"{name} (uid {uid})")
    if group is not None:
        gid, group_name = _group_id(group)
        parts.append(f"group {group_name} (gid {gid})")
    if user is not None:
        assert gid is not None and uid is not None
        # As initgroups(3): the groups the user is a member of, plus the primary one.
        member_of = os.getgrouplist(name, gid) if entry is not None else [gid]
        groups = tuple(sorted(set(member_of)))
    if os.geteuid() != 0:
        option = "--user" if user is not None else "--group"
        raise ConfigError(
            f"{option} {user if user is not None else group}: only root can start the workers as"
            f" another user or group (this master runs as uid {os.geteuid()})"
        )
    return Identity(uid, gid, groups, ", ".join(parts))
