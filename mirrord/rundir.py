"""Trust in the runtime directory, checked the way sshd's StrictModes checks ~/.ssh.

Whoever can write the runtime directory can replace ``control.sock`` (and read every
producer's ``register``, with its ring's descriptors) or plant ring files.  So the directory
must be owned by root or by us and writable only by us (or by our own group, or root's),
and every directory above it up to ``/`` must be owned by root or by us and not writable
by group or others, unless it has the sticky bit (``/tmp``: nobody can rename or delete
what another user put there).  ``check`` returns the one line that says which path fails
and why, or None.  The path is resolved first, so a symlink is judged by where it leads.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any


def _who(uid: int) -> str:
    try:
        import pwd

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (KeyError, ImportError):
        return f"uid {uid}"


def check(path: Path, *, euid: int | None = None, egid: int | None = None,
          group_owner_ok: bool = False, what: str = "runtime_dir") -> str | None:
    """Why ``path`` (an existing runtime directory) cannot be trusted, or None.

    ``group_owner_ok``: a directory owned by another user is also accepted when its group
    is our effective group (``mirrord forward`` runs as root with ``Group=mirrord`` and
    uses the directory the daemon's user owns, ``mirrord:mirrord 0770``).
    ``what`` names the directory in the line (the control socket's directory is judged
    the same way when ``control_socket`` lies outside ``runtime_dir``).
    """
    euid = os.geteuid() if euid is None else euid
    egid = os.getegid() if egid is None else egid
    owners = {0, euid}
    groups = {0, egid}
    real = Path(os.path.realpath(path))
    where = f"{what} {path}" + (f" (-> {real})" if real != Path(os.path.abspath(path)) else "")
    try:
        st = os.stat(real)
    except OSError as e:
        return f"{where}: {e.strerror}"
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        return f"{where}: not a directory"
    if st.st_uid not in owners and not (group_owner_ok and st.st_gid == egid):
        return (f"{where}: owned by {_who(st.st_uid)}, must be owned by root or {_who(euid)} "
                f"(the user mirrord runs as)")
    if mode & stat.S_IWOTH:
        return f"{where}: mode {mode:04o} is writable by others (chmod o-w {real})"
    if mode & stat.S_IWGRP and st.st_gid not in groups:
        return (f"{where}: mode {mode:04o} is writable by group {st.st_gid}, which is neither root's "
                f"nor mirrord's group {egid} (chmod g-w {real})")
    for parent in real.parents:
        try:
            pst = os.stat(parent)
        except OSError as e:
            return f"{where}: parent {parent}: {e.strerror}"
        pmode = stat.S_IMODE(pst.st_mode)
        if pst.st_uid not in owners:
            return f"{where}: parent {parent} is owned by {_who(pst.st_uid)}, must be owned by root or {_who(euid)}"
        if pmode & (stat.S_IWGRP | stat.S_IWOTH) and not pmode & stat.S_ISVTX:
            return (f"{where}: parent {parent} has mode {pmode:04o}, writable by group or others "
                    f"without the sticky bit")
    return None


def as_owner(path: Path) -> dict[str, int]:
    """For ``check-config`` run by root, who cannot know the service's user: judge the
    directory as its owner would (the owner and its primary group), so that only the modes
    and the parents can fail.  Anyone else is judged as themselves."""
    if os.geteuid() != 0:
        return {}
    try:
        uid = os.stat(os.path.realpath(path)).st_uid
        import pwd

        return {"euid": uid, "egid": pwd.getpwuid(uid).pw_gid}
    except (OSError, KeyError):
        return {}


def check_control_socket(control_socket: Path, runtime_dir: Path, **kw: Any) -> str | None:
    """Why the directory of ``control_socket`` cannot be trusted, or None: the same check
    as ``runtime_dir``'s when the socket lies elsewhere (``/tmp/mirrord.sock``: whoever can
    write that directory can bind the path first and be handed the producers' rings).  A
    directory that does not exist yet is judged by its nearest existing ancestor."""
    parent = Path(os.path.abspath(control_socket)).parent
    if os.path.realpath(parent) == os.path.realpath(runtime_dir):
        return None
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return check(parent, what="control_socket directory", **kw)
