"""One job lifecycle for both engines (``pipeline.run_stack`` in one process and
``scale.run.run_stack_cluster`` on Dask), so that a fix of one is a fix of both:

1. ``prepare``: the claim on the outputs; with ``--resume`` the interrupted run of the same job
   taken over (or refused, naming what differs), without it the leftovers removed (saying how
   many finished parts a ``--resume`` would have kept);
2. the engine's work, inside the ``job`` block;
3. ``commit``: the frames checked and renamed together (``finish``);
4. on any error, signal or cancel: with ``--resume`` the finished parts kept, else everything
   the run made removed; a full disk reported as such; the claim always released.
"""
from __future__ import annotations

import contextlib

from ..errors import Interrupted
from . import resume


def starting_over(notes: list):
    """For ``OutputSet.prepare`` without ``--resume``: nothing is taken over, and the finished
    parts of the interrupted runs about to be removed are counted, for a hint."""

    def choose(folders):
        n = sum(resume.count_parts(f) for f in folders)
        if n:
            notes.append(f"note: the interrupted run had {n} finished part(s), removed now; "
                         "run with --resume to reuse such parts next time")
        return None

    return choose


@contextlib.contextmanager
def job(outs, fingerprint: dict, options, hooks, info):
    """The claim, the resume or fresh start, and the end of a run whatever happens inside.
    Yields None, or, when ``--resume`` found this job's commit cut short (killed while it moved
    the frames into place), the frames after finishing that commit: the engine has nothing to do."""
    hints = []
    try:
        outs.prepare(resume.chooser(fingerprint) if options.resume else starting_over(hints))
        for line in [*outs.notes, *hints]:
            hooks.say(line)
        yield finish_cut_commit(outs, info, hooks) if outs.cut is not None else None
    except BaseException as exc:
        signal = signal_behind(exc)
        err = resume.end_early(exc, outs, options.resume, hooks.say)  # with --resume, finished parts stay
        if signal is not None and signal is not exc:
            raise signal from None
        if err is not None:
            raise err from None
        raise
    finally:
        outs.close()


def signal_behind(exc: BaseException):
    """The ``Interrupted`` a library replaced with its own error (the signal came while rasterio
    was inside a ``try: ... except: raise TypeError(...)``): the run stopped for the signal."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Interrupted):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def finish_cut_commit(outs, info, hooks) -> list:
    """The frames the cut commit had not moved yet, each checked whole again (they were before
    it began), moved into place: the sequence is the one that run made, complete."""
    from ..geo.verify import verify_output

    expect = dict(width=info.out_width, height=info.out_height, count=info.count, dtype=info.dtype)
    left = [i for i in range(len(outs.final)) if i not in outs.cut]
    for i in left:
        verify_output(outs.temp[i], outs.names[i], expect)
    seen = len(outs.notes)
    with (hooks.critical or contextlib.nullcontext)():
        paths = outs.commit()
    for line in outs.notes[seen:]:
        hooks.say(line)
    hooks.say(f"finished the interrupted run's commit: {len(left)} frame(s) moved into place, "
              f"{len(paths)} frames in {outs.out_dir}")
    return paths
