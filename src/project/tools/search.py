"""Hyperparameter search with Optuna on this machine or cluster, no account: ``python search.py``.

Every trial is ``train.py fit`` with the config's own options changed (an ordinary run folder:
config, metrics, checkpoints, record), reporting its validation metric after each epoch so that
unpromising trials are pruned. The study lives in a SQLite file (or any database URL Optuna
takes), so a stopped search continues where it was, and several workers (``--parallel``, one per
device, or one per SLURM task) share it.
"""

import argparse
import json
import math
import os
import random
import shlex
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState
from rich.console import Console
from rich.table import Table

from project.errors import UserError
from project.engine.paths import train_command
from project.tools.processes import Devices, Runs, Stopped, as_arguments, find_record, last_error, tool_folder
from project.engine.study import make_pruner, open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FAILURES_IN_A_ROW = 3  # then the search stops: the setting, not one unlucky trial, is the problem


@dataclass
class Parameter:
    """One line of a search-space file: a config key and its range (low/high, log, step) or choices."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def suggest(self, trial: Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        assert self.low is not None and self.high is not None
        if all(isinstance(v, int) for v in (self.low, self.high, self.step or 1)):
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def example(self) -> Any:
        return self.choices[0] if self.choices is not None else self.low


def read_space(path: Path) -> list[Parameter]:
    """A search-space file: ``config.key: {low: L, high: H[, log: true][, step: S]}`` or
    ``config.key: {choices: [A, B, ...]}``, keys as on the command line without ``--``."""
    try:
        entries = yaml.safe_load(path.read_text())
    except FileNotFoundError as error:
        raise UserError(f"search space not found: {path}") from error
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(entries, dict) or not entries:
        raise UserError(f"{path}: expected lines of `config.key: {{low: ..., high: ...}}` or `config.key: {{choices: [...]}}`")
    return [parameter(path, str(key).removeprefix("--"), spec) for key, spec in entries.items()]


def parameter(path: Path, key: str, spec: Any) -> Parameter:
    where = f"{path}, {key}"
    if not isinstance(spec, dict) or not (set(spec) <= {"low", "high", "log", "step", "choices"}):
        raise UserError(f"{where}: expected {{low: ..., high: ...[, log: true][, step: ...]}} or {{choices: [...]}}, got {spec!r}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise UserError(f"{where}: choices must be a non-empty list, alone")
        return Parameter(key, choices=spec["choices"])
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high")
    # YAML reads 1e-4 (no decimal point) as a string; it is meant as a number.
    low, high, step = (number(where, name, spec.get(name)) for name in ("low", "high", "step"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false")
    if low >= high or (log and low <= 0):  # type: ignore[operator]
        raise UserError(f"{where}: needs low < high{' and low > 0 (log scale)' if log else ''}, got {low} and {high}")
    if log and step is not None:
        raise UserError(f"{where}: step and log cannot be combined")
    if step is not None and not 0 < step <= high - low:  # type: ignore[operator]
        raise UserError(f"{where}: step must be > 0 and at most high - low ({high - low}), got {step}")  # type: ignore[operator]
    return Parameter(key, low=low, high=high, log=log, step=step)


def number(where: str, name: str, value: Any) -> int | float | None:
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {name} must be a number, got {value!r}") from None


class TrialFailed(Exception):
    """A trial's ``train.py`` ended with an error: the trial fails, the search goes on."""


class Search:
    """One worker of a search: runs trials until the study holds ``trials`` finished ones."""

    def __init__(self, options: argparse.Namespace, fit_args: list[str], space: list[Parameter], config: Any) -> None:
        self.options, self.fit_args, self.space = options, fit_args, space
        checkpoint = config["checkpoint"]
        if not checkpoint.get("monitor"):
            raise UserError("the search needs a validation metric to compare trials: the config sets no checkpoint.monitor")
        self.monitor, self.direction = checkpoint["monitor"], "maximize" if checkpoint["mode"] == "max" else "minimize"
        self.folder = (tool_folder(config, "search") / options.study).resolve()
        self.storage = options.storage or f"sqlite:///{self.folder / 'study.db'}"
        self.runs = Runs()
        self.devices = Devices(options.parallel)
        self.failures_in_a_row = 0

    def open_study(self) -> optuna.Study:
        self.folder.mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial gets one line of ours instead
        pruner = make_pruner(self.options.pruner, self.options.startup_trials, self.options.warmup_epochs)
        study = optuna.create_study(storage=open_storage(self.storage), study_name=self.options.study,
                                    direction=self.direction, pruner=pruner, load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise UserError(f"study {self.options.study!r} in {self.storage} was made to {study.direction.name.lower()} "
                            f"its metric, but {self.monitor} is to {self.direction}: choose another --study")
        self.adopt_orphans(study)
        # Seeded by the search seed, this worker and the trials so far: a resumed search, or a second
        # worker, does not propose the same first parameters again.
        worker = os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SLURM_PROCID") or "0"
        seed = random.Random(f"{self.options.seed}/{worker}/{len(study.trials)}").randrange(2**31)
        study.sampler = optuna.samplers.TPESampler(seed=seed)
        return study

    @staticmethod
    def adopt_orphans(study: optuna.Study) -> None:
        """Trials left RUNNING by a search of this machine that is gone (killed with SIGKILL; its
        trial stopped with it, ``processes.stop_when_parent_dies``) are marked failed and queued to
        run again. A running trial of another machine's worker, or of a live one, is left alone."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("search")
            if not isinstance(owner, dict) or owner.get("host") != socket.gethostname() or is_alive(owner.get("pid")):
                continue
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            print(f"trial {trial.number} was left running by search process {owner['pid']}, which is gone: "
                  "marked failed, and queued to run again", flush=True)

    def trial_arguments(self, trial: Trial, values: dict[str, Any], home: Path) -> list[str]:
        """``fit``'s arguments for a trial: the user's, the trial's values, and where it reports."""
        pruning = {"class_path": "project.engine.callbacks.OptunaPruning", "init_args": {
            "storage": self.storage, "study_name": self.options.study, "trial_number": trial.number,
            "monitor": self.monitor, "pruner": self.options.pruner,
            "startup_trials": self.options.startup_trials, "warmup_epochs": self.options.warmup_epochs}}
        return [*self.fit_args, *as_arguments(values), f"--trainer.default_root_dir={home}", f"--trainer.callbacks+={json_line(pruning)}"]

    def objective(self, trial: Trial) -> float:
        values = {p.key: p.suggest(trial) for p in self.space}
        trial.set_user_attr("search", {"host": socket.gethostname(), "pid": os.getpid()})  # whose trial (adopt_orphans)
        home = self.folder / f"trial_{trial.number}"
        log = home / "output.log"
        start = time.perf_counter()
        try:
            with self.devices.take() as env:
                code = self.runs.run(train_command("fit", self.trial_arguments(trial, values, home)), log, env)
        except Stopped:
            trial.study.enqueue_trial(values, user_attrs={"retry_of": trial.number})  # run again on resume
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 1))
        if code != 0:
            error = f"exit {code}: {last_error(log)} (output: {log})"
            trial.set_user_attr("error", error)
            raise TrialFailed(error)
        fit = find_record(home, "fit")
        results = fit["results"]
        trial.set_user_attr("run_folder", fit["folder"])
        trial.set_user_attr("value", results["best_score"])
        trial.set_user_attr("best_checkpoint", results["best_checkpoint"])
        if "pruned_at_epoch" in frozen(trial).user_attrs:  # written by the trial's train.py (OptunaPruning)
            raise optuna.TrialPruned()
        if results["best_score"] is None:
            error = f"no {self.monitor} was logged (output: {log})"
            trial.set_user_attr("error", error)
            raise TrialFailed(error)
        return results["best_score"]

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """One line per trial; stops the search after ``FAILURES_IN_A_ROW`` failed trials."""
        took = f"{trial.user_attrs.get('seconds', 0):.0f} s"
        values = ", ".join(f"{k}={brief(v)}" for k, v in trial.params.items())
        if trial.state == TrialState.FAIL:
            self.failures_in_a_row += 1
            print(f"trial {trial.number} failed ({took}): {trial.user_attrs.get('error', '')}  [{values}]", flush=True)
            if self.failures_in_a_row >= FAILURES_IN_A_ROW:
                study.stop()
            return
        self.failures_in_a_row = 0
        what = f"pruned after epoch {trial.user_attrs['pruned_at_epoch']}" if trial.state == TrialState.PRUNED else "finished"
        score = trial.user_attrs.get("value")
        shown = f"{self.monitor} {score:.4f}" if score is not None else "no score"
        print(f"trial {trial.number} {what}: {shown} ({took})  [{values}]", flush=True)

    def run(self) -> int:
        study = self.open_study()
        done = len(study.get_trials(deepcopy=False, states=FINISHED))
        print(f"study {self.options.study!r} ({self.storage}): {done} of {self.options.trials} trials done; "
              f"trials go to {self.folder}", flush=True)
        if done < self.options.trials:
            self.runs.stop_on_signals()
            try:
                # Until the study holds enough finished trials (a failed trial does not count; the
                # other workers' trials do), or FAILURES_IN_A_ROW stops it.
                study.optimize(self.objective, n_jobs=self.options.parallel, catch=(TrialFailed,), callbacks=[
                    self.after_trial, optuna.study.MaxTrialsCallback(self.options.trials, states=FINISHED)])
            except Stopped as stop:
                finished = len(study.get_trials(deepcopy=False, states=FINISHED))
                print(f"search stopped by {stop} with {finished} of {self.options.trials} trials done; run the same "
                      "command again to continue (stopped trials run again)", file=sys.stderr)
                return stop.exit_code
        if self.failures_in_a_row >= FAILURES_IN_A_ROW:
            print(f"error: the search stopped after {FAILURES_IN_A_ROW} failed trials in a row (above: each one's error "
                  "and output file)", file=sys.stderr)
            return 1
        self.report(study)
        return 0

    def report(self, study: optuna.Study) -> None:
        """The trials, best first, and the command that reproduces the best one."""
        trials = study.get_trials(deepcopy=False, states=FINISHED)
        if not trials:
            return
        ordered = sorted(trials, key=lambda t: score_order(t, self.direction))
        table = Table(title=f"Study {self.options.study}: {len(trials)} trials, best first")
        names = column_names([p.key for p in self.space])
        for column in ("trial", self.monitor, "state", *names, "run folder"):
            table.add_column(column, overflow="fold")
        for trial in ordered:
            score = trial.user_attrs.get("value")
            state = "finished" if trial.state == TrialState.COMPLETE else f"pruned at {trial.user_attrs.get('pruned_at_epoch')}"
            folder = trial.user_attrs.get("run_folder")
            table.add_row(str(trial.number), f"{score:.4f}" if score is not None else "-", state,
                          *(brief(trial.params.get(p.key, "")) for p in self.space),
                          os.path.relpath(folder, self.folder) if folder else "-")
        Console(highlight=False, markup=False).print(table)
        best = study.best_trial
        command = train_command("fit", [*self.fit_args, *as_arguments({k: best.params[k] for k in best.params})])
        lines = [f"Best: trial {best.number}, {self.monitor} {best.value:.4f}, run folder {best.user_attrs.get('run_folder')}",
                 "Train it again (the same result, in a new run folder):", "  " + shlex.join(command)]
        checkpoint, folder = best.user_attrs.get("best_checkpoint"), best.user_attrs.get("run_folder")
        if checkpoint and folder:
            test = train_command("test", ["--config", str(Path(folder) / "config.yaml"), "--ckpt_path", checkpoint])
            lines += ["Test its checkpoint:", "  " + shlex.join(test)]
        print("\n".join(lines))


def column_names(keys: list[str]) -> list[str]:
    """Each key's last part (``lr`` for ``model.optimizer.init_args.lr``), or the whole key where two would look alike."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return [short if last.count(short) == 1 else key for key, short in zip(keys, last)]


def score_order(trial: FrozenTrial, direction: str) -> tuple[int, float]:
    score = trial.user_attrs.get("value")
    if score is None:
        return (1, 0.0)
    return (0, -score if direction == "maximize" else score)


def frozen(trial: Trial) -> FrozenTrial:
    """The trial as stored now, with what its ``train.py`` process wrote into it."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def brief(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def json_line(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def overridden(space: list[Parameter], fit_args: list[str]) -> list[str]:
    """The space's keys that the command line also sets (the trial's value comes later and wins)."""
    return [p.key for p in space if any(arg == f"--{p.key}" or arg.startswith(f"--{p.key}=") for arg in fit_args)]


def parse_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="search.py", allow_abbrev=False,
        description="Search hyperparameters of a train.py fit with Optuna; every other argument goes to train.py fit.",
        epilog="Example: python search.py --space configs/search/lenet_digits.yaml --trials 20 --config configs/lenet_digits.yaml")
    parser.add_argument("--space", type=Path, required=True, help="the search-space YAML file (config keys and their ranges)")
    parser.add_argument("--trials", type=int, default=20, help="finished (completed or pruned) trials the study should hold")
    parser.add_argument("--study", help="the study's name (default: the space file's name); its trials go to runs/search/STUDY/")
    parser.add_argument("--storage", help="a database URL for the study (default: sqlite:///runs/search/STUDY/study.db)")
    parser.add_argument("--parallel", type=int, default=1, help="trials at a time, each on its own GPU(s) (default 1)")
    parser.add_argument("--pruner", choices=["median", "none"], default="median", help="median: prune a trial below the median")
    parser.add_argument("--startup-trials", type=int, default=5, help="trials that finish before any is pruned (default 5)")
    parser.add_argument("--warmup-epochs", type=int, default=3, help="epochs every trial runs before it can be pruned (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (trials' training seed is the config's)")
    options, fit_args = parser.parse_known_args(argv)
    if options.trials < 1:
        parser.error("--trials must be >= 1")
    options.study = options.study or options.space.stem
    return options, fit_args


def main(argv: list[str] | None = None, rooms: Sequence[str] = ()) -> None:
    options, fit_args = parse_options(sys.argv[1:] if argv is None else argv)
    from project.tools.cli import exit_on_user_error, parse_fit_arguments  # Lightning: seconds to import, not for --help

    with exit_on_user_error():
        space = read_space(options.space)
        for key in overridden(space, fit_args):
            print(f"note: --{key} is in the search space: each trial's value replaces the one given here", flush=True)
        config = parse_fit_arguments(rooms=rooms, args=[*fit_args, *as_arguments({p.key: p.example() for p in space})])
        code = Search(options, fit_args, space, config).run()
    sys.exit(code)


def is_alive(pid: Any) -> bool:
    """Whether a process ``pid`` runs on this machine."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True
