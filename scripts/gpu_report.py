"""results.md for scripts/gpu_check.sh: one Markdown table from the folder's logs.

    python scripts/gpu_report.py OUT

Reads OUT/cuda-tests.xml (pytest's JUnit report: each test's outcome, seconds and the figures it
recorded), OUT/gpu_speed.json (benchmarks/gpu_speed.py --json) and OUT/nvidia-smi.txt. A step that
left no file gets a row that says so. Exits 1 when a test failed or a step left nothing.
"""

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree


def test_rows(report: Path) -> tuple[list[tuple[str, str, str]], bool]:
    if not report.is_file():
        return [("CUDA tests", "did not finish: see cuda-tests.log", "")], False
    rows, ok = [], True
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        ok &= outcome in ("passed", "skipped")
        figures = "; ".join(p.get("value", "") for p in case.iter("property") if p.get("name") == "figure")
        rows.append((f"test: {case.get('name')}", f"{outcome} ({float(case.get('time', 0)):.0f} s)", figures))
    if not rows:
        return [("CUDA tests", "none ran: see cuda-tests.log", "")], False
    return rows, ok


def speed_rows(report: Path) -> tuple[list[tuple[str, str, str]], bool]:
    if not report.is_file():
        return [("speed figures", "did not finish: see gpu_speed.log", "")], False
    speed = json.loads(report.read_text())
    return [(f"speed: {what}", figure, speed["device"]) for what, figure in speed["rows"]], True


def machine_row(facts: Path) -> tuple[str, str, str]:
    lines = facts.read_text().splitlines() if facts.is_file() else []
    if "name, driver_version, memory.total [MiB]" in lines:
        gpus = lines[lines.index("name, driver_version, memory.total [MiB]") + 1:]
        return ("machine", "; ".join(gpus), "nvidia-smi: name, driver, memory")
    return ("machine", "no GPU answered nvidia-smi", "")


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def main() -> int:
    out = Path(sys.argv[1])
    tests, tests_ok = test_rows(out / "cuda-tests.xml")
    speed, speed_ok = speed_rows(out / "gpu_speed.json")
    rows = [machine_row(out / "nvidia-smi.txt"), *tests, *speed]
    lines = [f"GPU check, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "", "| check | result | figures |", "| --- | --- | --- |"]
    lines += [f"| {cell(what)} | {cell(result)} | {cell(figures)} |" for what, result, figures in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if tests_ok and speed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
