"""The end of a run: provenance tags on every output, COG copies if asked, each output checked
whole (``geo.verify``), then the commit that renames them all.

Provenance makes an output answer "what made me?" on its own: the software version, the
weights (file name, SHA-256, network variant), the run, the tiling and precision, and the time
window and position in it that made this frame (``MSTT_FRAME`` already says whether the frame
is an input super-resolved or a new, synthesised one), and the job's fingerprint
(``MSTT_JOB``, ``run.resume``), so that ``batch --resume`` skips a stack only when its frames
were made by this very job."""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .. import plugin_version
from ..geo.outputs import OutputSet
from ..geo.stack import IO_ERRORS, StackInfo, first_line
from ..geo.verify import storage_error, verify_output
from ..geo.write import add_tags, kept_nbits, to_cog
from ..checksum import file_sha256
from . import device

JOB_TAG = "MSTT_JOB"  # the job's fingerprint in every frame


@dataclass(frozen=True)
class RunRecord:
    """What made a run's outputs, for their provenance tags: the stack, the window plan, the
    network variant, and the tiling and precision it ran with."""

    info: StackInfo
    plan: tuple
    variant: str
    tiling: str
    job: dict | None = None  # the fingerprint (run.resume), with the tile the run used


def run_record(info: StackInfo, plan, net, tile: int, overlap: int, dtype, dev, job: dict | None = None) -> RunRecord:
    return RunRecord(info, tuple(plan), str(getattr(net, "variant", "")),
                     f"{tile} px tiles, overlap {overlap} px, {device.precision_name(dtype)} on {dev.type}", job)


def provenance_tags(record: RunRecord, weights, run_id: str) -> list:
    """Tags for each output (in output order)."""
    common = {
        "MSTT_SOFTWARE": f"mstt-stvsr {plugin_version()}".strip(),
        "MSTT_RUN": run_id,
        "MSTT_VARIANT": record.variant,
        "MSTT_WEIGHTS": Path(weights).name if weights else "(a model passed by the caller)",
        "MSTT_TILING": record.tiling,
    }
    if weights:
        common["MSTT_WEIGHTS_SHA256"] = file_sha256(weights)
    if record.job is not None:
        common[JOB_TAG] = json.dumps(record.job, sort_keys=True)
    tags = [dict(common) for _ in range(record.info.n_outputs)]
    for wi, win in enumerate(record.plan):
        frames = ",".join(str(f) for f in win.frames)
        for p, pos in win.outputs:
            tags[p]["MSTT_WINDOW"] = f"{wi + 1}/{len(record.plan)}: inputs {frames}, output position {pos}"
    return tags


def finish(record: RunRecord, outs: OutputSet, cog: bool, weights, critical=None) -> list:
    """Tag, convert, check and commit every output; return the final paths. ``critical``: a
    context manager factory the commit runs inside (a signal waits until it is done)."""
    info = record.info
    expect = dict(width=info.out_width, height=info.out_height, count=info.count, dtype=info.dtype)
    for tmp, name, tags in zip(outs.temp, outs.names, provenance_tags(record, weights, outs.token)):
        try:
            add_tags(tmp, tags)
            if cog:
                copy = tmp.with_name(tmp.name + ".cog")
                to_cog(tmp, copy, kept_nbits(info))
                os.replace(copy, tmp)
        except IO_ERRORS as exc:
            raise storage_error(f"{name}: could not be written ({first_line(exc)})", outs.out_dir) from None
    for tmp, name in zip(outs.temp, outs.names):
        verify_output(tmp, name, expect)
    with (critical or contextlib.nullcontext)():
        return outs.commit()


def commit(record: RunRecord, outs: OutputSet, options, weights, hooks) -> list:
    """The last step of either engine: ``finish``, with what the commit did said in the log."""
    seen = len(outs.notes)
    paths = finish(record, outs, options.cog, weights, hooks.critical)
    for line in outs.notes[seen:]:
        hooks.say(line)
    return paths
