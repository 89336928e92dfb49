"""An exclusive claim on a set of outputs: one small file that exists while a run owns them.

The claim is created atomically (written under a private name, then hard-linked to its final
name, which fails if it exists; ``O_CREAT | O_EXCL`` where hard links are not supported), so
two runs, two processes or two hosts sharing a network folder cannot both hold it. It records
who holds it (host, boot, process and its start time), so a later run can tell a live holder
(refused) from the leftover of a killed one (taken over and reported) without guessing by age.
A claim is released only by its holder (its token is checked before the file is removed).
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError


def _boot_id() -> str | None:
    """The kernel's id of this boot (Linux): a process of an earlier boot is surely gone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started (Linux, clock ticks since boot): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def _alive(pid: int) -> bool | None:
    """True / False where this system can tell, None where it cannot (not POSIX)."""
    if os.name != "posix":
        return None  # os.kill(pid, 0) would not probe there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a claim, as recorded in its file."""

    token: str
    host: str
    pid: int
    started: str
    boot: str | None = None
    ticks: str | None = None
    work: str | None = None

    @staticmethod
    def me(token: str, work: str | None) -> "Holder":
        pid = os.getpid()
        return Holder(token=token, host=socket.gethostname(), pid=pid,
                      started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), boot=_boot_id(), ticks=_start_ticks(pid),
                      work=work)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}, since {self.started}"

    def gone(self) -> bool:
        """True only when this host can tell for sure that the holder no longer runs."""
        if self.host != socket.gethostname():
            return False
        if self.boot and _boot_id() and self.boot != _boot_id():
            return True
        alive = _alive(self.pid)
        if alive is False:
            return True
        return bool(alive and self.ticks and _start_ticks(self.pid) not in (None, self.ticks))


class Claim:
    """``acquire()`` or raise InputError naming the holder; ``release()`` (idempotent).

    ``acquire`` returns the holder of a stale claim it took over (None if there was none), so
    the caller can clean up and report what that run left behind."""

    def __init__(self, path, work: str | None = None):
        self.path = Path(path)
        self.token = uuid.uuid4().hex
        self.work = work
        self.held = False

    def acquire(self):
        mine = Holder.me(self.token, self.work)
        taken_over = None
        for _ in range(3):  # a stale claim taken over, then one more try; races end in a refusal
            if self._create(mine):
                self.held = True
                return taken_over
            holder = self.read_holder()
            if holder is None or not holder.gone():
                raise InputError(self._busy_message(holder))
            if self._remove_stale(holder):
                taken_over = holder
        raise InputError(self._busy_message(self.read_holder()))

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self.read_holder()
        if holder is not None and holder.token == self.token:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def read_holder(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def _create(self, mine: Holder) -> bool:
        """Write the claim under a private name and link it into place: all or nothing."""
        text = json.dumps(mine.__dict__)
        private = self.path.with_name(f"{self.path.name}.{self.token}")
        private.write_text(text, encoding="utf-8")
        try:
            os.link(private, self.path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # no hard links here (FAT, some SMB shares): exclusive create
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS):
                raise
            return self._create_exclusive(text)
        finally:
            private.unlink(missing_ok=True)

    def _create_exclusive(self, text: str) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return True

    def _remove_stale(self, holder: Holder) -> bool:
        """Move the stale claim aside, then make sure it was that one (not a fresh claim made
        meanwhile by another run doing the same); a fresh one is put back."""
        aside = self.path.with_name(f"{self.path.name}.stale.{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = Holder(**json.loads(aside.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            moved = None
        if moved is not None and moved.token != holder.token:
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _busy_message(self, holder: Holder | None) -> str:
        if holder is None:
            return (f"{self.path} exists but cannot be read; if no run is writing into "
                    f"{self.path.parent}, delete it")
        return (f"outputs in {self.path.parent} are being written by another run ({holder.describe()}); "
                f"wait for it to finish, or choose another output folder or prefix. If that run is no "
                f"longer running, delete {self.path}")
