"""The project uses no private name of torch or Lightning outside ``project.engine.internals``, and
each reach declared there still means what it meant when it was checked."""

import importlib
import inspect
import os
import signal
from functools import partial
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from private_api import scan
from project.datamodules import LoaderOptions, TensorDataModule
from project.engine import internals
from project.engine.distributed import CPUSyncBatchNorm
from project.engine.resume import LIGHTNING_HPC_CHECKPOINTS
from project.lightning_modules import ClassificationModule
from project.nets import TwoLayerNet

SRC = Path(__file__).resolve().parents[1] / "src" / "project"


def test_no_private_torch_or_lightning_name_is_used_outside_the_internals_module():
    found = scan(SRC)
    assert set(found) <= {SRC / "engine" / "internals.py"}, "\n".join(use for uses in found.values() for use in uses)


def test_batch_norm_base_is_still_the_base_of_every_batch_norm_layer():
    for layer in (nn.BatchNorm1d(3), nn.BatchNorm2d(3), nn.BatchNorm3d(3), nn.SyncBatchNorm(3), CPUSyncBatchNorm(3)):
        assert isinstance(layer, internals.BatchNormBase), type(layer)
    assert not isinstance(nn.LayerNorm(3), internals.BatchNormBase)
    assert {"running_mean", "running_var", "num_batches_tracked"} <= set(dict(nn.BatchNorm2d(3).named_buffers()))


@pytest.mark.parametrize("noise", [*internals.WARNINGS, *internals.LOG_LINES], ids=lambda n: n.text[:40])
def test_every_filtered_message_is_still_worded_so_by_the_library_that_gives_it(noise):
    assert (noise.as_written or noise.text) in inspect.getsource(importlib.import_module(noise.emitted_by))


def test_the_quieted_lines_come_from_the_loggers_that_are_quieted():
    import lightning.fabric.utilities.seed
    import lightning.pytorch.utilities.rank_zero

    assert lightning.fabric.utilities.seed.log.name == internals.SEED_LOGGER
    assert lightning.pytorch.utilities.rank_zero.rank_zero_module.log.name == internals.LOG_LINES_LOGGER


def test_lightning_cli_still_lays_checkpoint_hyperparameters_in_the_method_the_mixin_replaces():
    source = inspect.getsource(LightningCLI.__init__)
    assert source.index("self.parse_arguments(") < source.index("self._parse_ckpt_path()")
    assert "hyper_parameters" in inspect.getsource(LightningCLI._parse_ckpt_path)
    assert callable(vars(internals.SkipLightningCheckpointHparams)["_parse_ckpt_path"])


def test_lightning_cli_still_saves_a_module_class_and_rebuilder_under_the_keys_model_config_of_reads():
    import lightning.pytorch.cli
    import lightning.pytorch.core.mixins.hparams_mixin

    assert '"_class_path"' in inspect.getsource(lightning.pytorch.cli._InstantiatorFn)
    assert '"_instantiator"' in inspect.getsource(lightning.pytorch.core.mixins.hparams_mixin)
    saved = {"_class_path": "a.B", "_instantiator": "lightning.pytorch.cli.instantiate_module", "lr": 0.1}
    assert internals.model_config_of(saved, "x.Y") == {"class_path": "a.B", "init_args": {"lr": 0.1}}
    assert internals.model_config_of({"lr": 0.1}, "x.Y") == {"class_path": "x.Y", "init_args": {"lr": 0.1}}


def test_the_unrepeated_sampler_gives_each_rank_every_nth_sample_and_repeats_none():
    ranks = [list(internals.UnrepeatedDistributedSampler(range(5), num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert ranks == [[0, 2, 4], [1, 3]]


class SeesTheSigtermHandler(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.at_train_start = signal.getsignal(signal.SIGTERM)


def tiny_fit(tmp_path, callbacks=(), **trainer_options) -> tuple[Trainer, ClassificationModule]:
    module = ClassificationModule(partial(TwoLayerNet, hidden=4))
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks), **trainer_options)
    trainer.fit(module, datamodule=TensorDataModule(dataset="iris", loader=LoaderOptions(batch_size=10)))
    return trainer, module


def test_lightning_installs_its_signal_handlers_before_on_train_start_and_restores_them(tmp_path):
    """engine.signals.StopOnSignal takes over in on_train_start: after Lightning's own handlers."""
    before = signal.getsignal(signal.SIGTERM)
    seen = SeesTheSigtermHandler()
    tiny_fit(tmp_path, [seen])
    assert seen.at_train_start is not before and callable(seen.at_train_start)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_loader_counts_the_batches_trained_on_and_lightning_saves_that_count(tmp_path):
    """The fit loop saves a stateful train loader's state in the checkpoint and fetches no batch
    ahead of the one trained on (engine.data.ResumableLoader relies on both)."""
    trainer, _ = tiny_fit(tmp_path, max_steps=3)  # iris: 105 training samples, batches of 10: stopped mid-epoch 0
    trainer.save_checkpoint(tmp_path / "mid_epoch.ckpt")
    saved = torch.load(tmp_path / "mid_epoch.ckpt", weights_only=True)["loops"]["fit_loop"]["state_dict"]
    assert saved["combined_loader"] == [{"epoch": 0, "batches_done": 3}]


def test_lightning_still_continues_hpc_checkpoints_by_the_name_resume_looks_for(tmp_path, monkeypatch):
    from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

    (tmp_path / "hpc_ckpt_3.ckpt").write_bytes(b"")
    assert sorted(p.name for p in tmp_path.glob(LIGHTNING_HPC_CHECKPOINTS)) == ["hpc_ckpt_3.ckpt"]
    trainer = Trainer(default_root_dir=tmp_path, logger=False)
    assert _CheckpointConnector(trainer)._hpc_resume_path == os.path.join(tmp_path, "hpc_ckpt_3.ckpt")


def test_the_model_summary_hook_takes_what_parameter_summary_reads():
    parameters = list(inspect.signature(ModelSummary.summarize).parameters)
    assert parameters[:4] == ["summary_data", "total_parameters", "trainable_parameters", "model_size"]


def test_lightnings_sigterm_outside_training_is_a_system_exit_the_cli_turns_into_143():
    assert issubclass(SIGTERMException, SystemExit)


def test_jsonargparse_still_lists_known_subclasses_as_the_short_help_formatter_reads_them():
    from jsonargparse import ArgumentParser, DefaultHelpFormatter

    action = ArgumentParser().add_argument("--net", type=nn.Module)
    full = DefaultHelpFormatter("prog")._get_help_string(action)
    assert internals.KNOWN_SUBCLASSES + "torch.nn.Module, " in full and full.endswith(")")
    short = internals.ShortHelpFormatter("prog")._get_help_string(action)
    listed = short.partition(internals.KNOWN_SUBCLASSES)[2].split(", ")
    assert len(listed) == internals.ShortHelpFormatter.SHOWN + 1 and short.endswith("more: any subclass by its import path)")
    assert len(full.split(", ")) > 100 > len(short.split(", "))
