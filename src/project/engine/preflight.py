"""Checks of parsed values that Lightning, torch or numpy would refuse only later: with a
traceback, or after a whole epoch of training. Each raises ``UserError`` naming the option."""

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from project.errors import UserError

SEED_RANGE = (0, 2**32 - 1)  # what numpy's generator takes, and so Lightning's seed_everything
METRIC_STAGES = ("train", "val", "test")  # a monitor named "<stage>/..." must be one the module logs
MAX_CONFIG_VALUES = 100_000  # a recipe has a few hundred; YAML aliases can multiply a small file past any memory


def read_yaml(text: str, where: str) -> Any:
    """``text`` as YAML (JSON included), or as itself where it is not YAML. Refused (``UserError``,
    naming ``where``) when its aliases expand to more values than any config holds (an alias
    "bomb": ten lines that become 10^9 values), before anything expands it."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return text  # jsonargparse says what is wrong with it
    if root is not None and expanded_size(root, {}) > MAX_CONFIG_VALUES:
        raise UserError(f"{where}: its YAML aliases (*name) expand to over {MAX_CONFIG_VALUES:,} values; "
                        "no config needs that many: write the values out")
    return yaml.safe_load(text)


def is_file(value: str) -> bool:
    """Whether ``value`` names a file (a config given inline is no file name, however long)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` holds once every alias is replaced by what it names; an alias is a
    second reference to the same node, so each node is counted once and reused."""
    if id(node) not in sizes:
        sizes[id(node)] = 1
        if isinstance(node, yaml.SequenceNode):
            sizes[id(node)] += sum(expanded_size(child, sizes) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            sizes[id(node)] += sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    return sizes[id(node)]


def check_seed(seed: Any) -> None:
    if isinstance(seed, int) and not isinstance(seed, bool) and not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise UserError(f"seed_everything must be in {SEED_RANGE[0]}..{SEED_RANGE[1]} (2^32 - 1), got {seed}")


def check_accelerator(accelerator: Any) -> None:
    """A GPU asked for on a machine where torch sees none (Lightning: "No supported gpu backend found!")."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(f"trainer.accelerator is {accelerator!r} but torch sees no CUDA GPU here "
                        f"(torch.cuda.is_available() is False; torch {torch.__version__}, built for CUDA "
                        f"{torch.version.cuda}): use --trainer.accelerator auto or cpu")


@contextmanager
def trainer_options_checked() -> Iterator[None]:
    """Lightning's refusal of a trainer option (an unknown profiler or strategy name, more devices
    than there are) as one line: it names the option itself."""
    try:
        yield
    except (MisconfigurationException, ValueError) as error:  # ValueError: an unknown strategy name
        raise UserError(f"trainer options: {error}") from error


def check_run_folder_name(option: str, value: Any) -> None:
    """A logger's ``name`` or ``version`` is a folder inside the runs folder, never a way out of it."""
    if isinstance(value, str) and (Path(value).is_absolute() or ".." in Path(value).parts):
        raise UserError(f"trainer.logger.init_args.{option} is {value!r}: it names a folder inside the runs folder "
                        "(save_dir), not a path; to write elsewhere set trainer.logger.init_args.save_dir")


def monitors_of(callbacks: Iterable[Callback]) -> dict[str, str]:
    """``{option: metric}`` for the checkpoint and early-stopping callbacks that watch a metric."""
    return {("early_stopping" if isinstance(c, EarlyStopping) else "checkpoint") + ".monitor": c.monitor
            for c in callbacks if isinstance(c, (ModelCheckpoint, EarlyStopping)) and c.monitor}


def check_monitors(monitors: dict[str, str], logged: set[str]) -> None:
    """A monitor (``{option: metric}``) that names a metric the module does not log, found before
    the first step rather than by Lightning at the end of the first epoch. Only names of the
    module's own stages (``val/...``) are checked: a callback may log others."""
    for option, monitor in monitors.items():
        if monitor.split("/")[0] in METRIC_STAGES and monitor not in logged:
            nearest = difflib.get_close_matches(monitor, sorted(logged), n=1)
            raise UserError(f"{option} is {monitor!r}, which this model does not log"
                            + (f" (did you mean {nearest[0]!r}?)" if nearest else "")
                            + f"; it logs {', '.join(sorted(logged))}")
