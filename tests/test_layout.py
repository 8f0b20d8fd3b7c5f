"""The layout a reader relies on: imports run one way (engine foundation, then the rooms a user
edits, then the tools on top), with no circle; nothing outside the data-module contract probes a
data module with hasattr or getattr; and a class added to a room is found by its name alone."""

import ast
import sys
from pathlib import Path

import pytest

from conftest import REPO
from import_graph import ROOMS, TOP, circles, floors, folders, graph, rank, upward_arrows
from project.__main__ import main

PACKAGE = REPO / "src" / "project"


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(PACKAGE)


def test_imports_have_no_circle(edges):
    assert circles(edges) == []


def test_the_folders_stand_on_at_most_six_floors_without_a_circle(edges):
    by_folder = folders(edges, "project")
    assert circles(by_folder) == []
    assert max(floors(by_folder).values()) + 1 <= 6, floors(by_folder)


def test_imports_run_one_way_from_the_engine_through_the_rooms_to_the_tools(edges):
    assert upward_arrows(edges, "project") == []
    ranks = {module: rank(module, "project") for module in edges}
    on_disk = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert {m.split(".")[1] for m, r in ranks.items() if r == 2} == set(TOP)  # the tools exist as named
    assert {m.split(".")[1] for m, r in ranks.items() if r == 1} == set(ROOMS)
    assert on_disk == {*ROOMS, "engine", "inference", "tools"}  # every folder has its rank


def test_nets_import_no_lightning_and_no_other_room(edges):
    for path in sorted((PACKAGE / "nets").glob("*.py")):
        imported = {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
                    for alias in node.names} | {node.module for node in ast.walk(ast.parse(path.read_text()))
                                                if isinstance(node, ast.ImportFrom) and node.module}
        assert not [name for name in imported if name.startswith("lightning")], path
    for module, targets in edges.items():
        if module.startswith("project.nets"):
            assert all(t.startswith(("project.nets", "project.errors")) for t in targets), (module, targets)


def probes_of_data_modules(path: Path) -> list[str]:
    """``hasattr``/``getattr`` calls whose object is a data module (by its name in the code)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            target = ast.unparse(node.args[0])
            if "datamodule" in target or target in ("data", "dm"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_probes_a_data_module_it_takes_the_contract_instead():
    found = [probe for path in sorted(PACKAGE.rglob("*.py")) for probe in probes_of_data_modules(path)]
    assert found == []


USERS_DATA_MODULE = '''
from torch.utils.data import TensorDataset
import torch

from project.engine.data import ProjectDataModule


class NoiseForTheLayoutTest(ProjectDataModule):
    """Random inputs with random labels, 2 classes."""

    def setup(self, stage):
        generator = torch.Generator().manual_seed(0)
        x, y = torch.rand(48, 6, generator=generator), torch.randint(0, 2, (48,), generator=generator)
        self.train_set, self.val_set, self.test_set = TensorDataset(x[:32], y[:32]), TensorDataset(x[32:40], y[32:40]), TensorDataset(x[40:], y[40:])
        self.predict_set, self.class_names = self.test_set, ["a", "b"]
'''


def test_a_data_module_added_to_the_rooms_folder_is_named_by_its_class_name_alone(tmp_path, monkeypatch, capsys):
    """As if ``noise.py`` were added to ``src/project/datamodules/``: no registry to edit."""
    import project.datamodules

    (tmp_path / "noise_for_the_layout_test.py").write_text(USERS_DATA_MODULE)
    monkeypatch.setattr(project.datamodules, "__path__", [*project.datamodules.__path__, str(tmp_path)])
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", str(REPO / "configs" / "two_layer_digits.yaml"), "--data", "NoiseForTheLayoutTest",
          "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    assert (tmp_path / "runs" / "two_layer_digits" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    sys.modules.pop("project.datamodules.noise_for_the_layout_test", None)
