"""Run claims: at most one process executes a given run, even when several `ablate` share a results folder.

A claim is the file `runs/<run_id>/claim`, created with O_CREAT|O_EXCL (atomic on local file
systems and NFSv3+), holding the claimer's host and pid. It is removed when the run ends. A claim
left behind by a process that died (host is this host, pid no longer alive) is stale and may be
taken over; a claim from another host cannot be checked from here and is respected until someone
deletes it by hand (`rm results/<name>/runs/<run_id>/claim`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLAIM_NAME = "claim"


@dataclass(frozen=True)
class Claim:
    """A held claim on one run folder; `release()` it when the run has ended (done or failed)."""

    path: Path
    hostname: str
    pid: int

    def release(self) -> None:
        """Remove the claim file, but only if it is still ours (never delete a successor's claim)."""
        if _read_owner(self.path) == {"hostname": self.hostname, "pid": self.pid}:
            # a read-only or failing disk must not hide the error that ended the run; the claim
            # left behind is stale once this process ends, and then taken over
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


def try_claim(run_dir: Path) -> Claim | None:
    """Claim a run folder for this process; None if a live process (or another host) holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_NAME
    claim = _create(path)
    if claim is not None:
        return claim
    owner = _read_owner(path)
    if owner is None or not _is_stale(owner):
        return None
    if not _remove_stale(path, owner):
        return None
    return _create(path)


def clear_stale_claim(run_dir: Path) -> bool:
    """Remove the run's claim if its holder died on this host (a killed pool or study worker, a
    SIGKILLed `ablate`); True if one was removed. A live holder's claim, or another host's, stays."""
    path = run_dir / CLAIM_NAME
    owner = _read_owner(path)
    return owner is not None and _is_stale(owner) and _remove_stale(path, owner) and not path.exists()


def claim_holder(run_dir: Path) -> str:
    """'host pid N' of the current claimer, for messages ('unknown' if the file vanished or is bad)."""
    owner = _read_owner(run_dir / CLAIM_NAME)
    return f"{owner['hostname']} pid {owner['pid']}" if owner else "unknown"


def _create(path: Path) -> Claim | None:
    """Atomically create the claim file; None if it already exists."""
    me = Claim(path=path, hostname=socket.gethostname(), pid=os.getpid())
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"hostname": me.hostname, "pid": me.pid}, handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:  # e.g. a full disk: an empty claim would block the run for everyone, forever
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return me


def _read_owner(path: Path) -> dict[str, Any] | None:
    """The claim's {hostname, pid}; None if missing or unreadable (e.g. caught between create and write)."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int) or "hostname" not in owner:
        return None
    return {"hostname": owner["hostname"], "pid": owner["pid"]}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs: it exists (another user's counts) and is not
    a zombie, which has exited and only waits for its parent to reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    with contextlib.suppress(OSError):  # no /proc (not Linux): existing is all we can tell
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2] != "Z"  # the state follows the parenthesised command name
    return True


def _is_stale(owner: dict[str, Any]) -> bool:
    """Stale means: claimed on this host by a pid that no longer runs."""
    return owner["hostname"] == socket.gethostname() and not process_alive(owner["pid"])


def _remove_stale(path: Path, owner: dict[str, Any]) -> bool:
    """Move the stale claim aside, then make sure what we moved is the stale one and not a claim
    that a concurrent taker created meanwhile (if it is, put it back and give up)."""
    aside = path.with_name(f"{CLAIM_NAME}.stale-{socket.gethostname()}-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another taker moved it first
        return True
    if _read_owner(aside) == owner:
        aside.unlink(missing_ok=True)
        return True
    try:
        os.link(aside, path)  # restore the live claim; fails if yet another one exists
    except FileExistsError:
        pass
    aside.unlink(missing_ok=True)
    return False
