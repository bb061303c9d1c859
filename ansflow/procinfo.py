"""Process identity: a pid plus its start time, so a reused pid is never mistaken for ours."""

from __future__ import annotations

import os
import socket


def start_time(pid: int) -> str | None:
    """The kernel's start time of a live process (clock ticks since boot), or None if it is gone.

    A zombie counts as gone: a killed ansflow whose parent never reaps it must not look alive.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # NOTE: the command name (field 2) may hold spaces and parentheses; split after the last ')'.
    rest = data[data.rfind(b")") + 2 :].split()
    try:
        if rest[0] in (b"Z", b"X"):
            return None
        return rest[19].decode()
    except IndexError:
        return None


def current() -> tuple[int, str | None, str]:
    """(pid, start time, host name) of this process."""
    pid = os.getpid()
    return pid, start_time(pid), socket.gethostname()


def is_alive(pid: int | None, started: str | None) -> bool:
    """Whether the process that recorded (pid, started) still runs on this machine."""
    if not pid:
        return False
    if started is not None and os.path.exists("/proc"):
        return start_time(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def os_user() -> str:
    """The name of the effective user id, for records of who approved or ran something.

    Not `getpass.getuser()`: it believes $LOGNAME and $USER, so anyone could sign as anyone.
    """
    import pwd

    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
