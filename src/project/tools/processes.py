"""``train.py`` runs as child processes, for ``search.py`` and ``seeds.py``: each an ordinary
``train.py`` process (its own run folder, its output in a log file), on a device of its own, all
stopped together.

A run is a separate process so that it is exactly the command a user can paste, a crash or a
bad setting ends only that run, and a run may itself use several devices (DDP).
"""

import ctypes
import json
import os
import queue
import shlex
import signal
import sys
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from project.errors import UserError
from project.engine.paths import runs_root


def as_arguments(values: dict[str, Any]) -> list[str]:
    """``{"model.optimizer.init_args.lr": 0.01}`` as ``["--model.optimizer.init_args.lr=0.01"]``:
    strings as they are, anything else as JSON (which the command line reads as YAML)."""
    return [f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in values.items()]


def tool_folder(config: Any, tool: str) -> Path:
    """Where ``search.py`` or ``seeds.py`` puts its runs: ``runs/<tool>``, or under
    ``trainer.default_root_dir`` when the command line moves the runs there."""
    return runs_root(config["trainer"]) / tool


def find_record(home: Path, subcommand: str) -> dict[str, Any]:
    """The record (``record.json``, ``project.engine.callbacks.RunRecord``) of the finished ``subcommand``
    run under ``home``, the ``default_root_dir`` given to that run alone, with its ``folder``."""
    for path in sorted(home.rglob("record.json")):
        record = json.loads(path.read_text())
        if record["subcommand"] == subcommand and record["status"] == "finished":
            return {**record, "folder": str(path.parent)}
    raise UserError(f"no finished {subcommand} run with a record.json under {home}: is RunRecord among trainer.callbacks?")


def gpus_visible() -> list[str]:
    """The GPUs this process may use, by the ids ``CUDA_VISIBLE_DEVICES`` takes."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [d.strip() for d in listed.split(",")][:count] if listed else [str(i) for i in range(count)]


class Devices:
    """One share of the machine per concurrent run. With GPUs, ``parallel`` runs split them evenly
    (``CUDA_VISIBLE_DEVICES`` for each); on CPU, each run gets ``cores / parallel`` threads."""

    def __init__(self, parallel: int) -> None:
        if parallel < 1:
            raise UserError(f"--parallel must be >= 1, got {parallel}")
        gpus = gpus_visible()
        if gpus and parallel > len(gpus):
            raise UserError(f"--parallel {parallel} needs a GPU per run, but {len(gpus)} are visible")
        self.shares: queue.Queue[dict[str, str]] = queue.Queue()
        per_run = len(gpus) // parallel
        threads = str(max(1, (os.cpu_count() or 1) // parallel))
        for k in range(parallel):
            share = {"CUDA_VISIBLE_DEVICES": ",".join(gpus[k * per_run : (k + 1) * per_run])} if gpus else {}
            if parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
                share["OMP_NUM_THREADS"] = threads
            self.shares.put(share)

    @contextmanager
    def take(self) -> Iterator[dict[str, str]]:
        """The environment of one run, on a share no other run holds."""
        share = self.shares.get()
        try:
            yield {**os.environ, **share}
        finally:
            self.shares.put(share)


class Stopped(Exception):
    """This program was asked to stop (SIGINT, SIGTERM); its runs were passed the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


class Runs:
    """The ``train.py`` processes running now. SIGINT (Ctrl-C) or SIGTERM to this program reaches
    each of them as SIGTERM: it saves ``checkpoints/interrupted.ckpt`` after its current step and
    exits. Runs start in a session of their own, so a Ctrl-C in the terminal reaches them only so."""

    def __init__(self) -> None:
        self.running: set[subprocess.Popen] = set()
        self.stop_signal: int | None = None

    def stop_on_signals(self) -> None:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stop_signal = signum
        for process in list(self.running):
            process.send_signal(signal.SIGTERM)

    def run(self, command: list[str], log: Path, env: dict[str, str]) -> int:
        """Run ``command`` with its output in ``log``; its exit status. Raises ``Stopped`` when this
        program was asked to stop, before or while it ran."""
        if self.stop_signal is not None:
            raise Stopped(self.stop_signal)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as output:
            output.write(shlex.join(command) + "\n\n")
            output.flush()
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                       preexec_fn=stop_when_parent_dies if sys.platform == "linux" else None)
        self.running.add(process)
        if self.stop_signal is not None:  # the signal came while it started
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait()
        finally:
            self.running.discard(process)
        if self.stop_signal is not None:
            raise Stopped(self.stop_signal)
        return code


PR_SET_PDEATHSIG = 1  # prctl(2)


def stop_when_parent_dies() -> None:
    """In a run just forked, before it starts (Linux): SIGTERM when the program that started it dies,
    also by SIGKILL, which it cannot pass on. In its own session, the run would otherwise go on
    training with nobody waiting for it; SIGTERM makes it save a checkpoint and stop."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def last_error(log: Path) -> str:
    """The line of a failed run's output that says why: its ``error:`` line, else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "(rank")) or "Error:" in line]
    return (errors or lines or ["no output"])[-1]
