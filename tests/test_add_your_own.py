"""docs/add-your-own.md, done as written: its files go into a folder outside the
project, its commands run as shown, and then the test and predict commands fit prints, as pasted.
No file of the project is touched."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, read_csv, write_png

SECTION = (REPO / "docs" / "add-your-own.md").read_text()
FILES = re.findall(r"^```(?:python|yaml)\n# (my_code/\S+)\n(.*?)^```", SECTION, re.S | re.M)
[COMMANDS] = re.findall(r"^```bash\n(.*?)^```", SECTION, re.S | re.M)


def git_status() -> str:
    return subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, check=True).stdout


def labelled_images(root: Path) -> None:
    """A user's data as the section expects it: ``data/labels.csv`` listing ``path,label`` rows."""
    rows = ["path,label"]
    for i in range(40):
        write_png(root / "data" / "images" / f"{i:03d}.png", i % 2, "L", seed=i)
        rows.append(f"images/{i:03d}.png,{('cat', 'dog')[i % 2]}")
    (root / "data" / "labels.csv").write_text("\n".join(rows) + "\n")


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def printed_command(output: str, after: str) -> list[str]:
    lines = output.splitlines()
    return shlex.split(lines[next(i for i, line in enumerate(lines) if line.startswith(after)) + 1])


@pytest.mark.slow
def test_the_add_your_own_section_trains_tests_and_predicts_as_written(tmp_path):
    assert [name for name, _ in FILES] == ["my_code/tiny_net.py", "my_code/csv_images.py", "my_code/focal_loss.py",
                                           "my_code/with_precision.py", "my_code/my_recipe.yaml"]
    before = git_status()
    for name, text in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n{text}")
    labelled_images(tmp_path)

    env, output = dict(os.environ), ""
    for line in COMMANDS.strip().splitlines():
        if line.startswith("export PYTHONPATH="):
            env["PYTHONPATH"] = line.removeprefix("export PYTHONPATH=").replace("$PWD", str(tmp_path))
        elif line.startswith(".venv/bin/python train.py "):  # the project's interpreter and train.py, from its folder
            output += run([sys.executable, str(REPO / "train.py"), *shlex.split(line.removeprefix(".venv/bin/python train.py "))],
                          tmp_path, env)
        else:
            pytest.fail(f"the section has a command this test does not know how to follow: {line}")

    # Export needs inference_inputs(), which the example leaves out: fit says so rather than print a command that fails.
    assert "Export it" not in output and "(To export it, write " in output and ".inference_inputs(): see docs/add-your-own.md.)" in output
    tested = run(printed_command(output, "Test it:"), tmp_path, env)
    assert "test/precision" in tested and "test/acc" in tested
    run(printed_command(output, "Predict the test split"), tmp_path, env)
    rows = read_csv(next(tmp_path.glob("runs/my_recipe/version_2/predictions.csv")))
    assert len(rows) == 8 and {row["predicted_class"] for row in rows} <= {"cat", "dog"}  # 20% of 40 images
    assert all(row["input"].startswith(str(Path("data") / "images")) for row in rows)
    assert git_status() == before
