"""Process identity: a pid plus its start time, so a reused pid is never mistaken for ours."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile

#: In every local step's environment: `pid:start time` of the ansflow process that started it,
#: so that the processes a killed ansflow left behind can be found and stopped.
OWNER_ENV = "ANSFLOW_OWNER"


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


def owner_token(pid: int, started: str | None) -> str:
    return f"{pid}:{started or ''}"


def temp_prefix(token: str) -> str:
    """The name prefix of the private temporary folder of the ansflow process `token` names."""
    return "ansflow-" + token.replace(":", "-") + "-"


def remove_temp_folders(token: str) -> None:
    """Remove the private temporary folders the (dead) ansflow process `token` names left: its
    steps' scripts and outputs, which may hold secrets. Only the usual temporary folder is
    looked at; one under another $TMPDIR stays."""
    prefix = temp_prefix(token)
    try:
        with os.scandir(tempfile.gettempdir()) as entries:
            found = [e.path for e in entries if e.name.startswith(prefix)]
    except OSError:
        return
    for path in found:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def stop_orphans(token: str) -> int:
    """SIGKILL the process groups of steps started by the (dead) ansflow process `token` names,
    and remove its temporary folder; returns how many groups were stopped.

    After `kill -9` of ansflow its steps run on, re-parented, and `resume` would start a second
    copy beside them. They are found by the OWNER_ENV value they inherited (pid plus start time,
    so a reused pid never matches), and each step is its own process group, so its children go
    too, even those that cleared their environment. Only this user's processes can be read.
    """
    marker = f"{OWNER_ENV}={token}".encode()
    groups: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
            if marker in environ.split(b"\0"):
                groups.add(os.getpgid(int(name)))
        except OSError:
            continue
    groups.discard(os.getpgrp())
    stopped = 0
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
            stopped += 1
        except OSError:
            continue
    remove_temp_folders(token)
    return stopped
