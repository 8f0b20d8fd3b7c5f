"""Every place where the project reaches past another library's public, documented API.

Three kinds of reach live in this module, each with the version it was checked with, and
``tests/test_internals.py`` fails when one of them moves (it also fails when a private name of
torch, Lightning, torchmetrics, torchvision or jsonargparse is used anywhere else in ``src/``):

- private names: ``BatchNormBase``, ``SkipLightningCheckpointHparams``,
  ``model_config_of``, ``UnrepeatedDistributedSampler``;
- filters keyed on the text of a message: ``WARNINGS``, ``LOG_LINES``, ``SEED_LOGGER``,
  ``KNOWN_SUBCLASSES`` (``ShortHelpFormatter``);
- patterns over torch's exporter wording: ``export_failure`` and ``STACK_TRACE`` (``tests/test_export.py`` pins them and
  ``datamodule_state``, where Lightning keeps a data module's state in a checkpoint).

Public behaviour the project relies on that a release could change without notice, the module
that relies on it, and the test that pins it (all checked with Lightning 2.6.6, torch 2.14.1,
jsonargparse 4.53.0, Optuna 5.1.0, wandb 0.31.0):

- ``signals``: Lightning installs its SIGTERM (and, under SLURM, SIGUSR1) handlers when ``fit``
  starts, before ``on_train_start``, and puts the previous ones back at its end; ``StopOnSignal``
  replaces them in ``on_train_start`` (``test_lightning_installs_its_signal_handlers_before_on_train_start``).
- ``data``: the fit loop saves ``state_dict()`` of a train loader that has ``state_dict`` and
  ``load_state_dict`` in every checkpoint, hands it back before the resumed epoch's first batch,
  and fetches no batch ahead from a loader with a length, so the batches a loader has handed out
  are the batches trained on (``test_a_loader_counts_the_batches_trained_on_and_resumes_after_them``
  and the mid-epoch resume tests in ``tests/test_reliability.py``).
- ``callbacks.checkpoint``: ``ModelCheckpoint.check_monitor_top_k`` decides whether a score enters
  the top k, from ``best_k_models`` and ``kth_best_model_path``
  (``test_the_best_checkpoint_moves_to_a_later_epoch_that_ties_but_not_to_a_worse_one``).
- ``callbacks.console``: ``ModelSummary.summarize`` receives ``summary_data``, ``total_parameters``,
  ``trainable_parameters`` and ``model_size`` first (``test_the_model_summary_hook_takes_what_parameter_summary_reads``).
- ``resume``: under SLURM, Lightning continues by itself from a file in ``default_root_dir``
  whose name holds ``hpc_ckpt_`` when no ``ckpt_path`` is given (``LIGHTNING_HPC_CHECKPOINTS``,
  ``test_lightning_still_continues_hpc_checkpoints_by_that_name``).
- ``schedules``: ``trainer.estimated_stepping_batches`` sets up the train loader when it is not set
  up yet, so ``num_training_batches`` is known in ``configure_optimizers``
  (``test_lr_schedule_is_stepped_per_optimizer_step_by_lightning``).
- ``cli``: Lightning's ``SIGTERMException`` (a SIGTERM outside training) is a ``SystemExit`` with
  status 0 (``test_a_sigterm_outside_training_exits_143_not_0``).
- ``arguments``: jsonargparse keeps the ``init_args`` that a replaced class shares with the new
  one (``test_a_class_named_on_the_command_line_starts_from_its_own_defaults``).
- ``trainer``: LightningCLI offers each name of ``subcommands()`` as a subcommand, with the
  arguments of the Trainer method of that name, and runs that method (``train.py export``;
  ``tests/test_export.py``).
- ``study``: ``optuna.trial.Trial(study, trial_id)`` opens a trial run by another process, as
  Optuna's own integrations do (``tests/test_search.py``).
- ``loggers``: wandb prints its offline footer from its service process, which heeds
  ``WANDB_SILENT`` but not ``Settings(silent)``
  (``test_offline_wandb_run_holds_metrics_config_and_pictures_and_resumes_the_same_run``).
"""

import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import nn

__all__ = ["UnrepeatedDistributedSampler"]

# -- private names ------------------------------------------------------------------------------

# torch 2.14.1: the common base class of BatchNorm1d/2d/3d and SyncBatchNorm. Public code can only
# list those classes one by one, which misses other BatchNorm layers (ours among them); torch's own
# SyncBatchNorm derives from it, as engine.distributed.CPUSyncBatchNorm does.
BatchNormBase = nn.modules.batchnorm._BatchNorm

# Lightning 2.6.6: ``UnrepeatedDistributedSampler`` (imported above) gives each rank every N-th
# sample without repeating any to even out the ranks; Lightning's own predict loop uses it, from
# its non-public ``lightning.pytorch.overrides`` package. engine.data evaluates with it.

class SkipLightningCheckpointHparams:
    """Mixin for ``LightningCLI``: its ``_parse_ckpt_path`` does nothing.

    Lightning 2.6.6 calls ``LightningCLI._parse_ckpt_path`` right after ``parse_arguments``: it reads
    the checkpoint that ``ckpt_path`` names and lays the checkpoint's hyperparameters over the whole
    parsed config, the command line included. ``tools.cli`` has read that checkpoint already and made
    them the parser's defaults (``tools.arguments.checkpoint_defaults``), under the configs and the
    command line, as Lightning's open pull request #21455 proposes: Lightning's pass would read the
    file again and undo what the configs and the command line said.
    """

    def _parse_ckpt_path(self) -> None:
        pass


def model_config_of(hparams: dict[str, Any], default_class_path: str) -> dict[str, Any]:
    """A checkpoint's hyperparameters as the model's config: ``{"class_path": ..., "init_args": ...}``.

    Lightning 2.6.6's CLI saves a module's hyperparameters (``load_from_checkpoint_support``) with
    its class under ``_class_path`` and the function that rebuilds it under ``_instantiator``; a
    module made in Python saves its arguments alone (``default_class_path`` is then the class)."""
    init_args = {key: value for key, value in hparams.items() if key not in ("_class_path", "_instantiator")}
    return {"class_path": hparams.get("_class_path") or default_class_path, "init_args": init_args}


# -- filters keyed on a message's text ------------------------------------------------------------


@dataclass(frozen=True)
class Noise:
    """A message a library gives on every run that a user can do nothing about."""

    text: str
    """A fragment of the message as it is given."""
    emitted_by: str
    """The module whose source holds the text (where the test looks for it)."""
    why: str
    as_written: str | None = None
    """The fragment as it stands in that source, where the message is formatted there (else ``text``)."""


WARNINGS = (
    Noise("`isinstance(treespec, LeafSpec)` is deprecated", "torch.utils._pytree",
          "Lightning 2.6.6 calls a torch API that torch 2.14.1 deprecates, once per run"),
    Noise("The dirpath has changed from", "lightning.pytorch.callbacks.model_checkpoint",
          "test, predict and resumed runs write to a new run folder; Lightning warns each time that the checkpoint's differs"),
    Noise("LightningCLI's args parameter is intended to run from within Python", "lightning.pytorch.cli",
          "tools.cli hands LightningCLI the command line itself, prepared by tools.arguments"),
    Noise("Total length of `list` across ranks is zero", "lightning.pytorch.utilities.data",
          "a run without a validation split says so itself (engine.callbacks.run_checks)",
          as_written="Total length of `{type(dataloader).__name__}` across ranks is zero"),
    Noise("module(s) in eval mode at the start of training", "lightning.pytorch.loops.fit_loop",
          "the frozen BatchNorm layers of a fine-tuned backbone are in eval mode on purpose"),
)
LOG_LINES = (  # logged by Lightning's rank_zero_info through this logger
    Noise("💡 Tip", "lightning.pytorch.trainer.connectors.callback_connector", "advertisements for Lightning's cloud services"),
    Noise("Trainer already configured with model summary callbacks", "lightning.pytorch.trainer.connectors.callback_connector",
          "engine.callbacks.ParameterSummary, in the base config, is one"),
    Noise("Loading `train_dataloader` to estimate", "lightning.pytorch.trainer.trainer",
          "the lr schedule counts the steps of an epoch (lightning_modules.base)"),
)
LOG_LINES_LOGGER = "lightning.pytorch.utilities.rank_zero"
SEED_LOGGER = "lightning.fabric.utilities.seed"  # "Seed set to N" (tools.cli quiets it where no run starts)


def is_not_noise(record: logging.LogRecord) -> bool:
    return not any(noise.text in str(record.msg) for noise in LOG_LINES)


def quiet_known_noise() -> None:
    """Leave out the ``WARNINGS`` and ``LOG_LINES``. The same filter function each call: ``addFilter``
    adds it once, however often the CLI runs in one process."""
    for noise in WARNINGS:
        warnings.filterwarnings("ignore", message=".*" + re.escape(noise.text))
    logging.getLogger(LOG_LINES_LOGGER).addFilter(is_not_noise)


# -- jsonargparse's help wording ------------------------------------------------------------------

KNOWN_SUBCLASSES = ", known subclasses: "
"""jsonargparse 4.53.0: how the help of an option that takes classes lists every subclass imported
(``ActionTypeHint.extra_help``); for ``torch.nn.Module`` that is every layer torch has, 1,500 lines."""


class ShortHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help formatter, listing at most ``SHOWN`` known subclasses of an option's class,
    the project's first."""

    SHOWN = 8

    def _get_help_string(self, action: Any) -> str:
        text = super()._get_help_string(action)
        head, found, listed = text.partition(KNOWN_SUBCLASSES)
        if not found:
            return text
        listed, closing = listed.rsplit(")", 1) if listed.endswith(")") else (listed, "")
        # The project's first, those its packages export (project.nets.LeNet) before deeper ones.
        paths = sorted(listed.split(", "), key=lambda path: (not path.startswith("project."), path.count(".")))
        if len(paths) > self.SHOWN:
            paths = [*paths[: self.SHOWN], f"... and {len(paths) - self.SHOWN} more: any subclass by its import path"]
        return head + found + ", ".join(paths) + (")" + closing if closing or text.endswith(")") else "")


# -- Lightning's checkpoint layout and torch's exporter wording ----------------------------------


def datamodule_state(checkpoint: dict[str, Any], datamodule: Any) -> dict[str, Any] | None:
    """What the data module's ``state_dict()`` returned when the checkpoint was saved. Lightning 2.6.6
    keeps it under the data module's class ``__qualname__`` (its ``_CheckpointConnector``); the
    exporter reads it without a Trainer (``tools.export``)."""
    return checkpoint.get(type(datamodule).__qualname__)


STACK_TRACE = "pkg.torch.onnx.stack_trace"
"""torch 2.14.1's ONNX exporter: the metadata key under which it stores each node's Python stack
(with this machine's absolute source paths); ``tools.export`` removes it."""

EXPORT_SUMMARY = "## Exception summary"
EXPORT_CALL = "The following call raised this error:"


def export_failure(message: str) -> str:
    """The reason and the user's line of code in a failure of ``torch.onnx.export``, as one line.
    torch 2.14.1 words it as an ``## Exception summary`` section whose first line is the reason,
    then ``The following call raised this error:`` and the call's file, line and code; a message
    without them gives its first line."""
    lines = [line.strip() for line in message.strip().splitlines()] or [""]
    reason = lines[0]
    if EXPORT_SUMMARY in lines:
        reason = next((line for line in lines[lines.index(EXPORT_SUMMARY) + 1 :] if line), reason)
    reason = re.sub(r"^<class '(?:[\w]+\.)*(\w+)'>: ", r"\1: ", reason)
    if EXPORT_CALL in lines:
        where, code = (lines[lines.index(EXPORT_CALL) + 1 :] + ["", ""])[:2]
        reason += f" (at {where.removeprefix('File ')}: {code})"
    return reason
