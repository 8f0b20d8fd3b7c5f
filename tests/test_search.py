"""search.py: a search-space file read as written, a 4-trial Optuna search on the digits recipe
offline (one trial pruned, the search stopped and continued), the printed best command re-running
to the same validation accuracy, and every trial an ordinary run folder that test accepts."""

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import QUIET, REPO, read_csv
from project.tools import search
from project.tools.cli import parse_fit_arguments
from project.errors import UserError
from project.tools.search import Parameter, read_space

LR = "model.optimizer.init_args.lr"
RECIPE = ["--config", str(REPO / "configs" / "lenet_digits.yaml"), "--trainer.max_epochs=3", *QUIET]
SEARCH = [sys.executable, str(REPO / "search.py"), "--space", "space.yaml", "--trials", "4",
          "--startup-trials", "1", "--warmup-epochs", "1", *RECIPE]


def write_space(folder: Path, text: str) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def test_a_space_file_reads_numbers_as_written_and_gives_whole_numbers_for_integer_ranges(tmp_path):
    space = read_space(write_space(tmp_path, f"""
{LR}: {{low: 1e-4, high: 1e-1, log: true}}   # YAML reads 1e-4 as text; it is a number here
--trainer.max_epochs: {{low: 10, high: 40, step: 10}}
data.loader.global_batch_size: {{choices: [32, 64]}}
data.augment.degrees: {{low: 0, high: 20.0}}
"""))
    assert space == [Parameter(LR, low=1e-4, high=0.1, log=True), Parameter("trainer.max_epochs", low=10, high=40, step=10),
                     Parameter("data.loader.global_batch_size", choices=[32, 64]), Parameter("data.augment.degrees", low=0, high=20.0)]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        values = {p.key: p.suggest(trial) for p in space}
        assert 1e-4 <= values[LR] <= 0.1 and values["trainer.max_epochs"] in (10, 20, 30, 40)
        assert isinstance(values["data.augment.degrees"], float)


def test_an_option_also_in_the_space_is_named():
    space = [Parameter("trainer.max_epochs", low=1, high=4), Parameter(LR, low=0.1, high=1.0)]
    assert search.overridden(space, ["--trainer.max_epochs=3", "--trainer.max_epochs_x", "2", "--config", "a.yaml"]) == [
        "trainer.max_epochs"]
    assert search.overridden(space, [f"--{LR}", "0.5"]) == [LR]


@pytest.mark.parametrize("text, says", [
    ("lr: 0.1", "expected {low: ..., high: ...[, log: true][, step: ...]} or {choices: [...]}"),
    ("lr: {low: 0.1}", "a range needs both low and high"),
    ("lr: {low: 0.1, high: 0.01}", "needs low < high"),
    ("lr: {low: 0, high: 1, log: true}", "low > 0 (log scale)"),
    ("lr: {low: a, high: 1}", "low must be a number, got 'a'"),
    ("lr: {choices: []}", "choices must be a non-empty list"),
    ("lr: {low: 1, high: 5, step: 0}", "step must be > 0 and at most high - low (4), got 0"),
    ("[1, 2]", "expected lines of"),
    ("lr: {low: [1, high: 2}", "is not valid YAML"),
])
def test_a_broken_space_file_is_refused_with_a_line_naming_the_problem(tmp_path, text, says):
    with pytest.raises(UserError, match=None) as refused:
        read_space(write_space(tmp_path, text))
    assert says in str(refused.value) and "space.yaml" in str(refused.value)


def test_the_example_spaces_name_options_their_recipes_take():
    for space_file in sorted((REPO / "configs" / "search").glob("*.yaml")):
        space = read_space(space_file)
        for pick in ("low", "high"):
            values = {p.key: p.choices[-1 if pick == "high" else 0] if p.choices else getattr(p, pick) for p in space}
            args = ["--config", str(REPO / "configs" / space_file.name), *[f"--{k}={v}" for k, v in values.items()]]
            config = parse_fit_arguments(args)
            for key, value in values.items():
                node = config
                for part in key.split("."):
                    node = node[part] if part in node else node["init_args"][part]
                assert node == value, (space_file.name, key)


def test_a_misspelt_space_key_stops_the_search_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_space(tmp_path, "model.optimizer.init_args.lrr: {low: 1e-4, high: 1e-2}\n")
    with pytest.raises(SystemExit) as stopped:
        search.main(SEARCH[2:])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: unknown option --model.optimizer.lrr: did you mean --model.optimizer.lr?"]
    assert not (tmp_path / "runs").exists()


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_search_prunes_stops_continues_and_prints_a_best_command_that_trains_the_same_model(tmp_path):
    write_space(tmp_path, f"{LR}: {{low: 1e-5, high: 3e-2, log: true}}\n")
    folder = tmp_path / "runs" / "search" / "space"
    folder.mkdir(parents=True)
    storage = f"sqlite:///{folder / 'study.db'}"
    # The first three trials are chosen here, so that what happens to each is known: the recipe's
    # lr, then one 300 times too small (pruned), then a larger one (stopped half-way).
    study = optuna.create_study(storage=storage, study_name="space", direction="maximize")
    for lr in (0.003, 1e-5, 0.01):
        study.enqueue_trial({LR: lr})

    search = subprocess.Popen(SEARCH, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(folder / "trial_2" / "lenet_digits" / "version_0" / "record.json", search)  # trial 2 has started training
    search.send_signal(signal.SIGTERM)
    output = search.communicate(timeout=300)[0]
    assert search.returncode == 128 + signal.SIGTERM, output
    assert "search stopped by SIGTERM with 2 of 4 trials done; run the same command again to continue" in output
    states = {t.number: t.state for t in optuna.load_study(study_name="space", storage=storage).trials}
    assert states[0] == TrialState.COMPLETE and states[1] == TrialState.PRUNED and states[2] == TrialState.FAIL

    resumed = subprocess.run(SEARCH, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    trials = optuna.load_study(study_name="space", storage=storage).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    [pruned] = [t for t in trials if t.state == TrialState.PRUNED and t.params[LR] == 1e-5]
    [again] = [t for t in finished if t.user_attrs.get("retry_of") == 2]  # the stopped trial, run again
    assert again.params[LR] == 0.01

    for trial in finished:  # ordinary run folders
        run = Path(trial.user_attrs["run_folder"])
        assert run == folder / f"trial_{trial.number}" / "lenet_digits" / "version_0"
        assert (run.parents[1] / "output.log").read_text().startswith(sys.executable)  # the command, then its output
        assert (run / "config.yaml").is_file() and list((run / "checkpoints").glob("best-*.ckpt"))
        record = json.loads((run / "record.json").read_text())
        assert record["status"] == "finished"
        epochs = {row["epoch"] for row in read_csv(run / "metrics.csv") if row.get("val/acc")}
        assert len(epochs) == (trial.user_attrs["pruned_at_epoch"] + 1 if trial.state == TrialState.PRUNED else 3)
    assert pruned.user_attrs["pruned_at_epoch"] < 2  # stopped before its last epoch

    lines = resumed.stdout.splitlines()
    best = optuna.load_study(study_name="space", storage=storage).best_trial
    rerun = shlex.split(lines[lines.index("Train it again (the same result, in a new run folder):") + 1])
    assert f"--{LR}={best.params[LR]!r}" in rerun and not any("search" in arg or "Optuna" in arg for arg in rerun)
    again_run = subprocess.run(rerun, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again_run.returncode == 0, again_run.stderr
    [record] = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "lenet_digits").rglob("record.json")]
    assert record["results"]["best_score"] == best.value == best.user_attrs["value"]

    test = shlex.split(lines[lines.index("Test its checkpoint:") + 1])
    tested = subprocess.run(test, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert tested.returncode == 0, tested.stderr
    [test_record] = [json.loads(p.read_text()) for p in folder.rglob("record.json")
                     if json.loads(p.read_text())["subcommand"] == "test"]
    assert test_record["results"]["metrics"]["test/acc"] > 0.5


def test_the_slurm_array_script_starts_search_py_from_the_repository(tmp_path):
    shown = subprocess.run(["bash", str(REPO / "scripts" / "search.sbatch"), "--help"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: search.py") and "--space" in shown.stdout


@pytest.mark.slow
def test_trials_that_fail_are_named_with_their_error_and_three_in_a_row_stop_the_search(tmp_path):
    write_space(tmp_path, f"{LR}: {{choices: [-1.0]}}\n")  # torch refuses a negative learning rate
    result = subprocess.run(SEARCH, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("trial ")]
    assert [line.split()[:3] for line in failed] == [["trial", str(n), "failed"] for n in range(3)]
    assert all("Invalid learning rate: -1.0" in line and "output.log" in line for line in failed)
    assert result.stderr.strip().splitlines()[-1].startswith("error: the search stopped after 3 failed trials in a row")


@pytest.mark.slow
def test_a_search_killed_with_sigkill_leaves_no_trial_training_and_its_rerun_runs_that_trial_again(tmp_path):
    write_space(tmp_path, f"{LR}: {{low: 1e-4, high: 1e-2, log: true}}\n")
    folder = tmp_path / "runs" / "search" / "space"
    storage = f"sqlite:///{folder / 'study.db'}"
    longer = [*SEARCH[:-len(RECIPE)], *RECIPE, "--trainer.max_epochs=40", "--trials", "1"]
    search = subprocess.Popen(longer, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(folder / "trial_0" / "lenet_digits" / "version_0" / "record.json", search)  # trial 0 is training
    search.kill()
    search.wait(timeout=60)
    deadline = time.monotonic() + 120  # the trial saw SIGTERM when its parent died: it saves and stops
    while trial_processes(folder / "trial_0") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not trial_processes(folder / "trial_0"), "the killed search's trial is still training"
    [left] = optuna.load_study(study_name="space", storage=storage).trials
    assert left.state == TrialState.RUNNING  # nobody could tell the study

    rerun = subprocess.run([*SEARCH[:-len(RECIPE)], *RECIPE, "--trials", "1"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "trial 0 was left running by search process" in rerun.stdout
    trials = optuna.load_study(study_name="space", storage=storage).trials
    assert trials[0].state == TrialState.FAIL
    [again] = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert again.state == TrialState.COMPLETE and again.params == left.params


def trial_processes(home: Path) -> list[str]:
    """The command lines of processes that train in ``home`` (a trial's folder)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"--trainer.default_root_dir={home}" in text:
            found.append(text)
    return found
