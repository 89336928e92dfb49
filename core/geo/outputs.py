"""The output files of one run: their names, the claim that makes them this run's alone, a hidden
work folder for the files being written, and the commit that renames them all only when every
one was written and checked.

Layout in the output folder, for outputs named ``<prefix>_t000.tif`` ...:

- ``.mstt-<prefix>.claim``: exists while a run owns these outputs (``claim.Claim``);
- ``.mstt-<prefix>.<token>.partial/``: that run's files being written (``<name>.part``): hidden,
  and named so that nothing in it looks like a frame to QGIS or a ``*.tif`` glob;
- the frames, which appear only at the commit, all together.

A run killed outright (power cut, ``kill -9``) leaves its claim and work folder; the next run
for the same outputs recognises both as left by a process that is gone, removes them and says so;
with ``--resume`` it takes the work folder over instead and reuses its finished parts
(``core.run.resume``). A run that stops early with ``--resume`` keeps its work folder (``keep``).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from ..errors import InputError
from .claim import Claim
from .stack import StackInfo, check_utf8
from .write import written_index, written_tag

HIDDEN = ".mstt-"  # the start of every name a run keeps in the output folder besides the frames
PART = ".part"  # a file being written (never ``.tif``: nothing may take it for a frame)
SIDECARS = (".aux.xml", ".msk")  # GDAL's side files of a GeoTIFF, which move and go with it
NAME_MAX = 255  # bytes in one file name on common file systems
OLD_TEMP = re.compile(r"^(?P<stem>.+)\.[0-9a-f]{8}(\.cog)?\.tmp\.tif$")  # earlier versions' temporaries


def frame_name(prefix: str, index: int, digits: int) -> str:
    return f"{prefix}_t{index:0{digits}d}.tif"


def frame_pattern(prefix: str) -> re.Pattern:
    """Names of frames of the sequence ``prefix`` (any index, any number of digits)."""
    return re.compile(re.escape(prefix) + r"_t(\d{3,})\.tif$")


def output_prefix(info: StackInfo, prefix: str | None = None) -> str:
    return prefix or common_prefix([Path(p).stem for p in info.paths])


def output_names(info: StackInfo, prefix: str | None = None) -> list:
    """``<prefix>_t000.tif`` ... zero-padded so that names sort in time order."""
    digits = max(3, len(str(info.n_outputs - 1)))
    return [frame_name(output_prefix(info, prefix), i, digits) for i in range(info.n_outputs)]


def common_prefix(stems) -> str:
    """Shared start of the input names without trailing separators/digits; 'mstt' if none."""
    pre = os.path.commonprefix(list(stems))
    pre = pre.rstrip("0123456789").rstrip("_-. ")
    return (pre or "mstt") + "_x4"


class OutputSet:
    """Output files of one run: final names, the claim, the work folder and the commit.

    ``check_existing`` (no disk writes) before any work; ``prepare`` takes the claim and
    makes the work folder; files are written at ``temp``; ``commit`` renames them (what to
    check before is the caller's: ``verify.verify_output``); ``discard`` removes what this run
    made; ``close`` (always) removes the work folder and releases the claim.
    ``inputs``: files this run reads, which no output may replace. ``notes``: what ``prepare``
    and ``commit`` found and did (leftovers removed, earlier frames removed), for the log."""

    def __init__(self, out_dir, names, overwrite: bool = False, *, prefix: str | None = None, inputs=(),
                 resume: bool = False):
        self.out_dir = Path(out_dir)
        self.names = list(names)
        self.overwrite = overwrite
        self.prefix = prefix or common_prefix([Path(n).stem for n in self.names])
        self.token = uuid.uuid4().hex[:8]
        key = self._key(self.prefix)
        self.work = self.out_dir / f"{HIDDEN}{key}.{self.token}.partial"
        self.final = [self.out_dir / n for n in self.names]
        self.temp = [self.work / (n + PART) for n in self.names]
        self.claim = Claim(self.out_dir / f"{HIDDEN}{key}.claim", work=self.work.name)
        self.inputs = [str(p) for p in inputs]
        self.created_dir = None
        self.notes: list = []
        self.resumed: Path | None = None  # the interrupted run's work folder this run took over
        self.kept = False  # the work folder stays for a later --resume (``keep``)
        self.resume = resume  # --resume: an interrupted commit of these outputs is finished (``cut_commit``)
        self.cut: set | None = None  # outputs an interrupted commit had moved into place, when finishing it

    @staticmethod
    def _key(prefix: str) -> str:
        """The prefix in the hidden names; a digest where it would make them too long."""
        if len((HIDDEN + prefix + ".0123456789abcdef.partial").encode()) <= NAME_MAX:
            return prefix
        return hashlib.sha1(prefix.encode()).hexdigest()[:16]

    # -- before any work ---------------------------------------------------------------------
    def check_existing(self) -> None:
        """Before any work, without touching the disk: refuse to replace inputs, or anything
        without ``overwrite``."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"output folder {self.out_dir} is a file")
        check_utf8(self.final[0] if self.final else self.out_dir, "output ")
        too_long = next((n for n in self.names if len(n.encode()) > NAME_MAX), None)
        if too_long:
            raise InputError(f"output name {too_long} is longer than {NAME_MAX} bytes; give a shorter prefix")
        for p in self.final:
            src = self._input_at(p)
            if src is not None:
                raise InputError(f"output {p} would replace the input {src}; choose another output folder or prefix")
        cut = self.cut_commit() if any(p.exists() for p in self.final) else None
        if cut is not None and not self.resume and not self.overwrite:
            folder, here = cut
            raise InputError(f"output {self.final[min(here)]} already exists: a run was killed while it moved its "
                             f"frames into place ({len(here)} of {len(self.final)} moved; the rest are in "
                             f"{folder.name}). Run again with --resume to finish moving them, or with --overwrite "
                             "to start over")
        if not self.overwrite and cut is None:
            existing = [p for p in self.final if p.exists()]
            if existing:
                more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
                raise InputError(f"output {existing[0]} already exists{more}; use --overwrite to replace")
        else:
            for p in self.final:
                if p.exists() and p.is_dir():
                    raise InputError(f"output {p} is a folder")

    def cut_commit(self) -> tuple | None:
        """(work folder, indices of the outputs in place) when some of these outputs are in
        place and are those of a run killed while it moved its frames into place: tagged with
        the token of a work folder left here (``MSTT_RUN``) that holds the rest, each checked
        whole before the commit began. None otherwise (a complete sequence is not cut)."""
        here = {i for i, p in enumerate(self.final) if p.is_file()}
        if not here or len(here) == len(self.final):
            return None
        for folder in self._leftovers():
            if not (folder.is_dir() and folder.name.endswith(".partial")):
                continue
            token = folder.name[: -len(".partial")].rsplit(".", 1)[-1]
            rest = [i for i in range(len(self.final)) if i not in here]
            if all((folder / (self.names[i] + PART)).is_file() for i in rest) and \
                    all(written_tag(self.final[i], "MSTT_RUN") == token for i in here):
                return folder, here
        return None

    def _input_at(self, path: Path) -> str | None:
        """The input (or a file an input reads, e.g. a VRT's source) that ``path`` is, if any."""
        real = os.path.realpath(path)
        for src in self.inputs:
            if os.path.realpath(src) == real:
                return src
            try:
                if path.exists() and os.path.samefile(src, path):  # hard links, case-insensitive names
                    return src
            except OSError:
                pass
        return None

    def prepare(self, resume=None) -> None:
        """Create the folder if needed, claim the outputs, clear what an interrupted run of the
        same outputs left, and make the work folder (the last checks before work).

        ``resume`` (``--resume``): a function given the work folders interrupted runs of these
        outputs left, returning the one to carry on (or None); it may raise InputError to
        refuse, and then leaves them all as they are. The folder chosen becomes this run's work
        folder (``resumed`` is its old path); the others are removed."""
        self.check_existing()
        self._make_folder()
        try:
            stale = self.claim.acquire()
            self.check_existing()  # another run may have finished these outputs meanwhile
            cut = self.cut_commit() if resume else None
            if cut is not None:  # only the run whose commit was cut may finish it, if it is this job
                taken = resume([cut[0]])
                if taken is None:
                    raise InputError(f"cannot finish the interrupted commit in {cut[0]}: it records no job to "
                                     "compare with this one. Run with --overwrite to start over")
                self.cut = cut[1]
            else:
                taken = resume([p for p in self._leftovers() if p.is_dir()]) if resume else None
            self._clear_leftovers(stale, keep=taken)
            if taken is None:
                self.work.mkdir()
            else:
                os.rename(taken, self.work)  # same folder: atomic; the claim names this work folder
                self.resumed = taken
                self.notes.append(f"note: finishing the commit of the interrupted run in {taken.name}{self._who(stale)}"
                                  f": {len(self.cut)} of {len(self.final)} frames were in place" if self.cut is not None
                                  else f"note: resuming the interrupted run in {taken.name}{self._who(stale)}")
        except BaseException as exc:
            self.discard()  # releases only a claim it holds, removes only the folders it made
            if isinstance(exc, OSError) and not isinstance(exc, InputError):
                raise InputError(f"cannot write in output folder {self.out_dir}: {exc.strerror or exc}") from None
            raise

    def _make_folder(self) -> None:
        if self.out_dir.exists():
            return
        missing = self.out_dir
        while not missing.parent.exists():
            missing = missing.parent
        try:
            self.out_dir.mkdir(parents=True)
        except FileExistsError:
            return  # made meanwhile by another run
        except OSError as exc:
            raise InputError(f"cannot create output folder {self.out_dir}: {exc.strerror or exc}") from None
        self.created_dir = missing

    def _leftovers(self) -> list:
        """Work folders of this prefix other than ours (we hold the claim: their runs are
        gone), and temporaries of earlier versions named after our outputs."""
        start = f"{HIDDEN}{self._key(self.prefix)}."
        stems = {Path(n).stem for n in self.names}
        found = []
        for entry in os.scandir(self.out_dir):
            old = OLD_TEMP.match(entry.name)
            if (entry.name.startswith(start) and entry.name.endswith(".partial") and entry.is_dir()) \
                    or (old and old.group("stem") in stems):
                found.append(Path(entry.path))
        return found

    def _clear_leftovers(self, stale, keep: Path | None = None) -> None:
        found = [p for p in self._leftovers() if p != keep]
        if not found:
            return
        for p in found:
            _remove(p)
        self.notes.append(f"note: removed {', '.join(sorted(p.name for p in found))} from {self.out_dir}, "
                          f"left by an interrupted run{self._who(stale)}")

    @staticmethod
    def _who(stale) -> str:
        return f" (process {stale.pid} on {stale.host}, since {stale.started})" if stale is not None else ""

    def temp_path(self, suffix: str) -> Path:
        """A path in the work folder for a run's other temporary files (e.g. flows)."""
        return self.work / suffix

    # -- the end -----------------------------------------------------------------------------
    def commit(self) -> list:
        """Rename every file into place (same folder, so each rename is atomic), with its GDAL
        side files; then, with ``overwrite``, remove later frames of an earlier run of the same
        sequence, so the folder holds one consistent sequence. Returns the final paths."""
        for i, (tmp, final) in enumerate(zip(self.temp, self.final)):
            if self.cut is not None and i in self.cut:
                continue  # moved by the interrupted commit this run finishes
            for side in SIDECARS:  # a replaced frame's side files would describe the old one
                Path(str(final) + side).unlink(missing_ok=True)
            os.replace(tmp, final)
            for side in SIDECARS:
                if Path(str(tmp) + side).exists():
                    os.replace(str(tmp) + side, str(final) + side)
        if self.overwrite:
            self._remove_earlier_frames()
        sync_folder(self.out_dir)
        return [str(p) for p in self.final]

    def _remove_earlier_frames(self) -> None:
        """Frames of this prefix that this run did not write and an earlier run did (their tags
        say so): an earlier run with more frames. Anything else named alike is kept, and said."""
        ours = set(self.names)
        removed, kept = [], []
        for entry in sorted(os.scandir(self.out_dir), key=lambda e: e.name):
            m = frame_pattern(self.prefix).fullmatch(entry.name)
            if not m or entry.name in ours or not entry.is_file() or self._input_at(Path(entry.path)):
                continue
            if written_index(entry.path) == int(m.group(1)):
                for p in [entry.path] + [entry.path + s for s in SIDECARS]:
                    Path(p).unlink(missing_ok=True)
                removed.append(entry.name)
            else:
                kept.append(entry.name)
        if removed:
            self.notes.append(f"note: removed {len(removed)} frame(s) of an earlier run of this sequence: "
                              f"{', '.join(removed)}")
        if kept:
            self.notes.append(f"note: kept {', '.join(kept)} in {self.out_dir}: named like this sequence's "
                              "frames but not written by mstt-stvsr")

    def discard(self) -> None:
        """Remove what this run made: its work folder, its claim, the folders it created."""
        _remove(self.work)
        self.claim.release()
        self._remove_created()

    def keep(self) -> None:
        """A run that stopped early keeps its work folder for a later ``--resume``: only the
        claim is released (the next run for these outputs takes the folder over or removes it)."""
        self.kept = True
        self.claim.release()

    def close(self) -> None:
        """Always, at the end: the work folder goes (unless kept) and the claim is released."""
        if not self.kept:
            _remove(self.work)
        self.claim.release()

    def _remove_created(self) -> None:
        if self.created_dir is None:
            return
        d = self.out_dir  # innermost first, only while empty
        while True:
            try:
                d.rmdir()
            except OSError:
                break
            if d == self.created_dir:
                break
            d = d.parent


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()
    except OSError:
        pass


def sync_folder(folder: Path) -> None:
    """Make the renames durable (POSIX; elsewhere a folder cannot be opened for this)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
