"""One config over several seeds, and each metric's mean, spread and range: ``python seeds.py``.

For every seed: ``train.py fit --seed_everything=SEED`` and then ``train.py test`` on the best
checkpoint that fit selected, each an ordinary run in ``runs/seeds/<name>/version_N/seed_SEED/``.
The numbers come from each run's ``record.json`` (``project.engine.callbacks.RunRecord``): the last
epoch's metrics and the best checkpoint's score from fit, the test metrics from test.
"""

import argparse
import csv
import math
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
from project.engine.paths import train_command
from project.tools.processes import Devices, Runs, Stopped, find_record, last_error, tool_folder

SUMMARY_COLUMNS = ("metric", "mean", "std", "min", "max", "seeds")


@dataclass
class SeedResult:
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    error: str | None = None


class SeedRuns:
    def __init__(self, fit_args: list[str], folder: Path, parallel: int, test: bool) -> None:
        self.fit_args, self.folder, self.test = fit_args, folder, test
        self.devices, self.runs = Devices(parallel), Runs()

    def run(self, seed: int) -> SeedResult:
        """fit, then test the checkpoint fit selected; the metrics both recorded."""
        result, home = SeedResult(seed), self.folder / f"seed_{seed}"
        with self.devices.take() as env:
            fit_args = [*self.fit_args, f"--seed_everything={seed}", f"--trainer.default_root_dir={home}"]
            if self.runs.run(train_command("fit", fit_args), home / "fit.log", env) != 0:
                result.error = f"fit: {last_error(home / 'fit.log')} (output: {home / 'fit.log'})"
                return result
            fit = find_record(home, "fit")
            results = fit["results"]
            result.runs.append(fit["folder"])
            result.metrics.update({k: v for k, v in results["metrics"].items() if "/" in k})  # not lr-<Optimizer>
            if results.get("best_score") is not None:
                result.metrics[f"{results['monitor']} (best checkpoint)"] = results["best_score"]
            checkpoint = results.get("best_checkpoint")
            if not self.test or not checkpoint:
                return result
            test_args = ["--config", str(Path(fit["folder"]) / "config.yaml"), "--ckpt_path", checkpoint]
            if self.runs.run(train_command("test", test_args), home / "test.log", env) != 0:
                result.error = f"test: {last_error(home / 'test.log')} (output: {home / 'test.log'})"
                return result
            test = find_record(home, "test")
            result.runs.append(test["folder"])
            result.metrics.update(test["results"]["metrics"])
        return result


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


def print_summary(rows: list[dict[str, Any]], seeds: list[int], folder: Path) -> None:
    table = Table(title=f"{len(seeds)} seeds ({' '.join(map(str, seeds))})", caption=str(folder))
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in rows:
        table.add_row(row["metric"], *(f"{row[c]:.4f}" if not math.isnan(row[c]) else "-" for c in ("mean", "std", "min", "max")),
                      str(row["seeds"]))
    Console(highlight=False, markup=False).print(table)


def run_name(config: Any) -> str:
    """The config's run name (``trainer.logger.init_args.name``), or ``run``."""
    logger = config["trainer"].get("logger")
    init_args = logger.get("init_args") if hasattr(logger, "get") else None
    return str(init_args.get("name") or "run") if init_args else "run"


def parse_options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="seeds.py", allow_abbrev=False,
        description="Train and test a config over several seeds and summarize each metric; every other argument goes to train.py fit.",
        epilog="Example: python seeds.py --seeds 0 1 2 --config configs/lenet_digits.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="the seeds (seed_everything) to run")
    parser.add_argument("--parallel", type=int, default=1, help="seeds at a time, each on its own GPU(s) (default 1)")
    parser.add_argument("--no-test", dest="test", action="store_false", help="fit only (for data without a test split)")
    parser.add_argument("--name", help="runs go to runs/seeds/NAME/version_N/ (default: the config's run name)")
    options, fit_args = parser.parse_known_args(argv)
    if len(set(options.seeds)) != len(options.seeds):
        parser.error("--seeds lists a seed twice")
    return options, fit_args


def main(argv: list[str] | None = None, rooms: Sequence[str] = ()) -> None:
    options, fit_args = parse_options(sys.argv[1:] if argv is None else argv)
    from project.tools.cli import exit_on_user_error, parse_fit_arguments  # Lightning: seconds to import, not for --help

    with exit_on_user_error():
        config = parse_fit_arguments(fit_args, rooms)
        root = tool_folder(config, "seeds") / (options.name or run_name(config))
        folder = root / f"version_{claim_version_folder(root, 0)}"
        runner = SeedRuns(fit_args, folder.resolve(), options.parallel, options.test)
        print(f"{len(options.seeds)} seeds, {options.parallel} at a time; runs go to {folder}", flush=True)
        runner.runs.stop_on_signals()
        try:
            with ThreadPoolExecutor(max_workers=options.parallel) as pool:
                results = []
                for result in pool.map(runner.run, options.seeds):
                    results.append(result)
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith(("test/acc", "test/loss")))
                    print(f"seed {result.seed}: {result.error or shown or 'done'}", flush=True)
        except Stopped as stop:
            print(f"stopped by {stop}; the seeds that finished are in {folder}", file=sys.stderr)
            sys.exit(stop.exit_code)
        done = [r for r in results if r.error is None]
        rows = summarize(done)
        per_seed = [{"seed": r.seed, **r.metrics, "runs": " ".join(r.runs)} for r in done]
        write_csv(folder / "summary.csv", rows, list(SUMMARY_COLUMNS))
        write_csv(folder / "seeds.csv", per_seed, ["seed", *(row["metric"] for row in rows), "runs"])
        if rows:
            print_summary(rows, [r.seed for r in done], folder)
        print(f"summary: {folder / 'summary.csv'}, each seed: {folder / 'seeds.csv'}")
        failed = [r for r in results if r.error is not None]
        if failed:
            print(f"error: {len(failed)} of {len(results)} seeds failed: " + "; ".join(f"seed {r.seed}: {r.error}" for r in failed),
                  file=sys.stderr)
            sys.exit(1)
