"""scripts/gpu_check.sh, dry run on the CPU: every step runs and results.md has a row for each."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import REPO


def cuda_test_names() -> list[str]:
    """The tests of tests/test_cuda.py as pytest names them (parametrized ones once per value)."""
    names = []
    for node in ast.parse((REPO / "tests" / "test_cuda.py").read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            values = [ast.literal_eval(d.args[1]) for d in node.decorator_list
                      if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "parametrize"]
            names += [f"{node.name}[{v}]" for v in values[0]] if values else [node.name]
    return names


@pytest.mark.xdist_group("several_processes")
@pytest.mark.slow
def test_the_dry_run_runs_every_cuda_test_and_benchmark_on_the_cpu_and_tabulates_them(tmp_path):
    out = tmp_path / "gpu check"
    result = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", str(out)], check=False, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable}, timeout=1500)
    assert result.returncode == 0, result.stdout + result.stderr + (out / "results.md").read_text()
    table = (out / "results.md").read_text()
    for name in cuda_test_names():
        assert f"| test: {name} | passed (" in table, name
    assert table.count("largest weight difference") == 3 and "bitwise unchanged" in table
    for figure in ("fp32, copied every batch", "| speed: LeNet, 60,000 digits, fp32 |", "time to 50% val acc",
                   "ResNet-18 head: template / plain loop", "ResNet-18 full: template / plain loop"):
        assert figure in table, figure
    assert "| machine | no GPU answered nvidia-smi |" in table
    for log in ("cuda-tests.log", "cuda-tests.xml", "gpu_speed.log", "gpu_speed.json", "nvidia-smi.txt"):
        assert (out / log).is_file(), log
