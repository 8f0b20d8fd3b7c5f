"""The Trainer's profiler when no profiling is asked for: Lightning's stand-in, minus its cost."""

import contextlib

from lightning.pytorch.profilers import PassThroughProfiler


class NoProfiler(PassThroughProfiler):
    """Profiles nothing, as Lightning's default ``PassThroughProfiler`` does, but cheaply.

    Lightning wraps each of the ~200 hook calls in a training step in ``profiler.profile(...)``; the
    default builds a generator-based context manager every time (~0.3 ms a step on 2 CPU cores, a
    sixth of a small net's step). A shared ``nullcontext`` does the same nothing. The base config
    sets it as ``trainer.profiler``; ``--trainer.profiler simple`` (or ``advanced``) profiles for real.
    """

    _nothing = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return self._nothing
