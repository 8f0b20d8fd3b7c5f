"""One config over several seeds, or k folds, and each metric's mean, spread and range: ``python seeds.py``.

For every seed: ``train.py fit --seed_everything=SEED`` and then ``train.py test`` on the best
checkpoint that fit selected, each an ordinary run in ``runs/seeds/<name>/version_N/seed_SEED/``.
With ``--folds K``, every seed runs once per fold (``--data.folds K --data.fold I``, fold I
validating), in ``fold_I/seed_SEED/``, and the best checkpoint also predicts its validation fold
(``train.py predict --data.predict_split val``); the summary is then over all folds and seeds, and
per fold, with what a seed's K folds give together (``tools.folds``: the out-of-fold scores, the
fold ensemble's test score).
``--resume`` goes on in the newest such folder: finished runs are not run again, a fit that was
stopped continues from its last checkpoint (``--resume auto``).
The numbers come from each run's ``record.json`` (``project.engine.callbacks.RunRecord``): the last
epoch's metrics and the best checkpoint's score from fit, the test metrics from test.
"""

import argparse
import csv
import math
import shlex
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from project.engine.loggers import claim_version_folder
from project.errors import UserError
from project.engine.paths import SERVE_PY, script_command, train_command
from project.tools.folds import (CONFUSION, ENSEMBLE_METRIC, PREDICTIONS, FoldRun, ensemble_command, ensemble_scores,
                                 write_out_of_fold)
from project.tools.processes import Devices, Runs, Stopped, find_record, last_error, tool_folder

SUMMARY_COLUMNS = ("metric", "mean", "std", "min", "max", "seeds")


@dataclass
class SeedResult:
    seed: int
    fold: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    error: str | None = None
    fold_run: FoldRun | None = None  # with --folds: what the out-of-fold predictions and the ensemble read

    @property
    def label(self) -> str:
        return f"fold {self.fold} seed {self.seed}" if self.fold is not None else f"seed {self.seed}"


class RunFailed(Exception):
    """A run of one seed (or fold) failed: why, in one line."""


def finished_record(home: Path, subcommand: str) -> dict[str, Any] | None:
    """``find_record``'s record, or ``None`` when no ``subcommand`` run under ``home`` finished."""
    try:
        return find_record(home, subcommand)
    except UserError:
        return None


class SeedRuns:
    def __init__(self, fit_args: list[str], folder: Path, parallel: int, test: bool, folds: int | None = None) -> None:
        self.fit_args, self.folder, self.test, self.folds = fit_args, folder, test, folds
        self.devices, self.runs = Devices(parallel), Runs()

    def jobs(self, seeds: list[int], only_folds: list[int] | None = None) -> list[tuple[int | None, int]]:
        """``(fold, seed)`` pairs, fold by fold (``only_folds``, or all); the fold is ``None`` without ``--folds``."""
        folds = (only_folds or range(self.folds)) if self.folds else [None]
        return [(fold, seed) for fold in folds for seed in seeds]

    def run(self, job: tuple[int | None, int]) -> SeedResult:
        """fit, then test the checkpoint fit selected, and with folds let it predict its validation
        fold; the metrics recorded. What finished in an earlier, stopped run of seeds.py
        (``--resume``) is read, not run again."""
        fold, seed = job
        result = SeedResult(seed, fold)
        home = self.folder / (f"fold_{fold}" if fold is not None else "") / f"seed_{seed}"
        with self.devices.take() as env:
            fold_args = [] if fold is None else [f"--data.folds={self.folds}", f"--data.fold={fold}", "--data.val_fraction=0"]
            again = ["--resume=auto"] if home.is_dir() else []  # a fit stopped part-way goes on from its last checkpoint
            try:
                fit = self.step(home, "fit", [*self.fit_args, *fold_args, f"--seed_everything={seed}",
                                              f"--trainer.default_root_dir={home}", *again], env)
                results = fit["results"]
                result.runs.append(fit["folder"])
                result.metrics.update({k: v for k, v in results["metrics"].items() if "/" in k})  # not lr-<Optimizer>
                if results.get("best_score") is not None:
                    result.metrics[f"{results['monitor']} (best checkpoint)"] = results["best_score"]
                if not (checkpoint := results.get("best_checkpoint")):
                    return result
                chosen = ["--config", str(Path(fit["folder"]) / "config.yaml"), "--ckpt_path", checkpoint]
                if self.test:
                    test = self.step(home, "test", chosen, env)
                    result.runs.append(test["folder"])
                    result.metrics.update(test["results"]["metrics"])
                if fold is not None:  # the fold's validation samples, predicted by the checkpoint that did not train on them
                    predict = self.step(home, "predict", [*chosen, "--data.predict_split=val"], env)
                    result.runs.append(predict["folder"])
                    result.fold_run = FoldRun(fold, Path(fit["folder"]) / "config.yaml", Path(checkpoint),
                                              fit["data"]["fold"]["validation_samples"], Path(predict["folder"]) / "predictions.csv")
            except RunFailed as failed:
                result.error = str(failed)
        return result

    def step(self, home: Path, subcommand: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
        """The record of the finished ``train.py SUBCOMMAND`` run under ``home``: read when an
        earlier seeds.py finished it, else run now (``RunFailed`` with the line that says why)."""
        if (record := finished_record(home, subcommand)) is not None:
            return record
        log = home / f"{subcommand}.log"
        if self.runs.run(train_command(subcommand, args), log, env) != 0:
            raise RunFailed(f"{subcommand}: {last_error(log)} (output: {log})")
        return find_record(home, subcommand)

    def cross_fold(self, done: list[SeedResult]) -> list[SeedResult]:
        """For each seed whose K folds all finished: the out-of-fold predictions and scores
        (``tools.folds``) and, with a test split, the fold ensemble's export and test score; a
        result with ``fold`` ``None`` each."""
        per_seed = [(seed, sorted((r.fold_run for r in done if r.seed == seed and r.fold_run), key=lambda run: run.fold))
                    for seed in dict.fromkeys(r.seed for r in done)]
        per_seed = [(seed, runs) for seed, runs in per_seed if len(runs) == self.folds]
        if not per_seed:
            return []
        results = [SeedResult(seed, metrics=metrics, runs=[str(self.folder / PREDICTIONS)])
                   for seed, metrics in write_out_of_fold(self.folder, per_seed).items()]
        for result, (seed, runs) in zip(results, per_seed):
            if not self.test:
                continue
            output = self.folder / f"ensemble_seed_{seed}"
            if (scores := ensemble_scores(output)) is None:
                with self.devices.take() as env:
                    if self.runs.run(ensemble_command(runs, output), output / "export.log", env) != 0:
                        result.error = f"ensemble export: {last_error(output / 'export.log')} (output: {output / 'export.log'})"
                        continue
                scores = ensemble_scores(output)
            result.metrics.update({ENSEMBLE_METRIC + name: value for name, value in (scores or {}).items()})
            result.runs.append(str(output / "ensemble.onnx"))
        return results


def summarize(results: list[SeedResult]) -> list[dict[str, Any]]:
    """Per metric: mean, sample standard deviation (n - 1), min and max over the seeds that have it."""
    names = list(dict.fromkeys(name for result in results for name in result.metrics))
    rows = []
    for name in names:
        values = [r.metrics[name] for r in results if name in r.metrics]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        rows.append({"metric": name, "mean": statistics.fmean(values), "std": std,
                     "min": min(values), "max": max(values), "seeds": len(values)})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def print_summary(rows: list[dict[str, Any]], title: str, folder: Path) -> None:
    table = Table(title=title, caption=str(folder))
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        table.add_row(row["metric"], *(f"{row[c]:.4f}" if not math.isnan(row[c]) else "-" for c in ("mean", "std", "min", "max")),
                      str(row["seeds"]))
    Console(highlight=False, markup=False).print(table)


def logger_settings(config: Any) -> tuple[str, Any]:
    """The config's logger: its class path and its ``init_args`` (empty ones without a logger)."""
    logger = config["trainer"].get("logger")
    if not hasattr(logger, "get"):  # false, or none given
        return "", {}
    return str(logger.get("class_path", "")), logger.get("init_args") or {}


def run_name(config: Any) -> str:
    """The config's run name (``trainer.logger.init_args.name``), or ``run``."""
    return str(logger_settings(config)[1].get("name") or "run")


def parse_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="seeds.py", allow_abbrev=False,
        description="Train and test a config over several seeds and summarize each metric; every other argument goes to train.py fit.",
        epilog="Example: python seeds.py --seeds 0 1 2 --config configs/lenet_digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the seeds (seed_everything) to run")
    parser.add_argument("--parallel", type=int, default=1, help="seeds at a time, each on its own GPU(s) (default 1)")
    parser.add_argument("--no-test", dest="test", action="store_false", help="fit only (for data without a test split)")
    parser.add_argument("--name", help="runs go to runs/seeds/NAME/version_N/ (default: the config's run name)")
    parser.add_argument("--folds", type=int, help="k-fold cross-validation: each seed once per fold (--data.folds K "
                        "--data.fold I), summarized over all and per fold")
    parser.add_argument("--fold", type=int, nargs="+", help="with --folds: run only these folds (one SLURM array "
                        "task each, with --resume and a --name of their own; a last --resume without --fold sums up all)")
    parser.add_argument("--resume", action="store_true", help="go on in the newest runs/seeds/NAME/version_N/ (version_0 "
                        "when there is none): what finished is read, not run again; a stopped fit continues from its last checkpoint")
    options, fit_args = parser.parse_known_args(argv)
    if len(set(options.seeds)) != len(options.seeds):
        parser.error("--seeds lists a seed twice")
    if options.folds is not None and options.folds < 2:
        parser.error(f"--folds must be 2 or more, got {options.folds}")
    if options.fold is not None and (options.folds is None or not all(0 <= f < options.folds for f in options.fold)):
        parser.error(f"--fold takes folds 0..K-1 of --folds K, got --fold {' '.join(map(str, options.fold))}"
                     + ("" if options.folds else " without --folds"))
    if any(arg.split("=")[0] in ("--data.folds", "--data.fold") for arg in fit_args):
        parser.error("--folds sets --data.folds and --data.fold for each run: leave those out")
    return options, fit_args


def wandb_group(config: Any, folder: Path) -> list[str]:
    """With a W&B logger that names no group: the option that puts every run of this folder (each
    fold and seed) in one W&B group, named after the folder."""
    class_path, init_args = logger_settings(config)
    if "Wandb" not in class_path or init_args.get("group"):
        return []
    return [f"--trainer.logger.init_args.group={folder.parent.name}-{folder.name}"]


def seeds_folder(root: Path, resume: bool) -> Path:
    """A new ``root/version_N``, or with ``resume`` the newest one there."""
    if not resume:
        return root / f"version_{claim_version_folder(root, 0)}"
    versions = sorted((p for p in root.glob("version_*") if p.name[8:].isdigit()), key=lambda p: int(p.name[8:]))
    if not versions:  # the first of several tasks that go on in one folder (a SLURM array) makes it
        (root / "version_0").mkdir(parents=True, exist_ok=True)
        return root / "version_0"
    return versions[-1]


def main(argv: list[str] | None = None, rooms: Sequence[str] = ()) -> None:
    options, fit_args = parse_options(sys.argv[1:] if argv is None else argv)
    from project.tools.cli import exit_on_user_error, parse_fit_arguments  # Lightning: seconds to import, not for --help

    with exit_on_user_error():
        config = parse_fit_arguments(fit_args, rooms)
        root = tool_folder(config, "seeds") / (options.name or run_name(config))
        folder = seeds_folder(root, options.resume)
        runner = SeedRuns([*fit_args, *wandb_group(config, folder)], folder.resolve(), options.parallel, options.test, options.folds)
        jobs = runner.jobs(options.seeds, options.fold)
        what = f"{len(options.seeds)} seeds" + (f" x {options.folds} folds" if options.folds else "")
        print(f"{what}, {options.parallel} at a time; runs go to {folder}", flush=True)
        runner.runs.stop_on_signals()
        try:
            with ThreadPoolExecutor(max_workers=options.parallel) as pool:
                results = []
                for result in pool.map(runner.run, jobs):
                    results.append(result)
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith(("test/acc", "test/loss")))
                    print(f"{result.label}: {result.error or shown or 'done'}", flush=True)
        except Stopped as stop:
            print(f"stopped by {stop}; the runs that finished are in {folder} (seeds.py --resume goes on there)", file=sys.stderr)
            sys.exit(stop.exit_code)
        if options.folds and options.fold is None:  # every fold ran: what they give together
            results += runner.cross_fold([r for r in results if r.error is None])
        done = [r for r in results if r.error is None]
        rows = summarize(done)
        fold_column = ["fold"] if options.folds else []
        per_run = [{**({"fold": "all" if r.fold is None else r.fold} if options.folds else {}), "seed": r.seed, **r.metrics,
                    "runs": " ".join(r.runs)} for r in done]
        write_csv(folder / "summary.csv", rows, list(SUMMARY_COLUMNS))
        write_csv(folder / "seeds.csv", per_run, [*fold_column, "seed", *(row["metric"] for row in rows), "runs"])
        if options.folds:
            per_fold = [{"fold": fold, **row} for fold in sorted({r.fold for r in done if r.fold is not None})
                        for row in summarize([r for r in done if r.fold == fold])]
            write_csv(folder / "folds.csv", per_fold, ["fold", *SUMMARY_COLUMNS])
        if rows:
            seeds = list(dict.fromkeys(r.seed for r in done))
            folds_done = sorted({r.fold for r in done if r.fold is not None})
            print_summary(rows, f"{len(seeds)} seeds ({' '.join(map(str, seeds))})"
                          + (f" x {len(folds_done)} folds ({' '.join(map(str, folds_done))})" if folds_done else ""), folder)
        print(f"summary: {folder / 'summary.csv'}, each run: {folder / 'seeds.csv'}"
              + (f", each fold: {folder / 'folds.csv'}" if options.folds else ""))
        together = [r for r in done if options.folds and r.fold is None]
        if together:
            matrix = folder / f"{CONFUSION}.png"
            print(f"out-of-fold predictions: {folder / PREDICTIONS}" + (f" (confusion matrix: {matrix})" if matrix.is_file() else ""))
        for result in together:
            if (ensemble := next((run for run in result.runs if run.endswith(".onnx")), None)) is not None:
                print(f"fold ensemble of seed {result.seed}, to serve:\n  {shlex.join(script_command(SERVE_PY, [ensemble]))}")
        failed = [r for r in results if r.error is not None]
        if failed:
            print(f"error: {len(failed)} of {len(results)} runs failed: " + "; ".join(f"{r.label}: {r.error}" for r in failed),
                  file=sys.stderr)
            sys.exit(1)
