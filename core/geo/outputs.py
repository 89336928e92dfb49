"""The output files of one run: their names, temporary names beside them, and the commit that
renames them all only when everything succeeded."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from ..errors import InputError
from .stack import StackInfo

class OutputSet:
    """Output files of one run: final names, temporary names beside them, and the commit.

    Files are written as ``<name>.<token>.tmp.tif`` in the output folder (same filesystem, so
    the final rename is atomic per file) and renamed only by ``commit`` after every frame
    succeeded; ``discard`` removes every temporary (and a folder this run created, if empty)."""

    def __init__(self, out_dir, names, overwrite: bool = False):
        self.out_dir = Path(out_dir)
        self.names = list(names)
        self.overwrite = overwrite
        self.token = uuid.uuid4().hex[:8]
        self.final = [self.out_dir / n for n in self.names]
        self.temp = [self.out_dir / f"{Path(n).stem}.{self.token}.tmp.tif" for n in self.names]
        self.created_dir = None
        self.extra_temps: list = []

    def check_existing(self) -> None:
        """Before any work, without touching the disk: refuse to overwrite."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise InputError(f"output folder {self.out_dir} is a file")
        if not self.overwrite:
            existing = [p for p in self.final if p.exists()]
            if existing:
                more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
                raise InputError(f"output {existing[0]} already exists{more}; use --overwrite to replace")
        else:
            for p in self.final:
                if p.exists() and p.is_dir():
                    raise InputError(f"output {p} is a folder")

    def prepare(self) -> None:
        """Create the folder if needed and make sure it can be written (last check before work)."""
        self.check_existing()
        if not self.out_dir.exists():
            missing = self.out_dir
            while not missing.parent.exists():
                missing = missing.parent
            try:
                self.out_dir.mkdir(parents=True)
            except OSError as exc:
                raise InputError(f"cannot create output folder {self.out_dir}: {exc.strerror or exc}") from None
            self.created_dir = missing
        probe = self.out_dir / f".mstt-write-test.{self.token}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            self.discard()
            raise InputError(f"output folder {self.out_dir} is not writable: {exc.strerror or exc}") from None

    def temp_path(self, suffix: str) -> Path:
        p = self.out_dir / f".mstt-{self.token}-{suffix}"
        self.extra_temps.append(p)
        return p

    def commit(self, cog: bool = False) -> list:
        """Convert to COG if asked (still under temporary names), then rename all."""
        if cog:
            from rasterio.shutil import copy as rio_copy

            for i, tmp in enumerate(self.temp):
                cog_tmp = tmp.with_name(tmp.name.replace(".tmp.tif", ".cog.tmp.tif"))
                self.extra_temps.append(cog_tmp)
                # the COG driver picks the predictor for the type and builds overviews itself
                rio_copy(str(tmp), str(cog_tmp), driver="COG", BIGTIFF="IF_SAFER", COMPRESS="DEFLATE",
                         PREDICTOR="YES", LEVEL=6)
                os.replace(cog_tmp, tmp)
        for tmp, final in zip(self.temp, self.final):
            os.replace(tmp, final)
        return [str(p) for p in self.final]

    def discard(self) -> None:
        for p in self.temp + self.extra_temps:
            for q in (p, Path(str(p) + ".aux.xml"), Path(str(p) + ".msk")):
                try:
                    if q.is_dir():
                        shutil.rmtree(q, ignore_errors=True)
                    else:
                        q.unlink()
                except FileNotFoundError:
                    pass
                except OSError:
                    pass
        if self.created_dir is not None:
            # remove the folders this run created, innermost first, only while empty
            d = self.out_dir
            while True:
                try:
                    d.rmdir()
                except OSError:
                    break
                if d == self.created_dir:
                    break
                d = d.parent


def output_names(info: StackInfo, prefix: str | None = None) -> list:
    """``<prefix>_t000.tif`` ... zero-padded so that names sort in time order."""
    if not prefix:
        prefix = common_prefix([Path(p).stem for p in info.paths])
    digits = max(3, len(str(info.n_outputs - 1)))
    return [f"{prefix}_t{i:0{digits}d}.tif" for i in range(info.n_outputs)]


def common_prefix(stems) -> str:
    """Shared start of the input names without trailing separators/digits; 'mstt' if none."""
    pre = os.path.commonprefix(list(stems))
    pre = pre.rstrip("0123456789").rstrip("_-. ")
    return (pre or "mstt") + "_x4"


