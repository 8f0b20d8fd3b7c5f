"""Command-line conveniences beyond jsonargparse: a class named on the command line starts from
its own defaults, a misspelt option is answered with the nearest valid one, and model options on
the command line win over a checkpoint's hyperparameters."""

import difflib
import importlib
import inspect
import json
import re
from typing import Any

from jsonargparse import ArgumentParser

from project.errors import UserError
from project.lightning_modules.base import is_plain_data


def with_class_defaults(args: list[str]) -> list[str]:
    """A class named on the command line under ``--model`` (``--model.optimizer torch.optim.SGD``)
    starts from its own defaults.

    jsonargparse keeps every option of the class being replaced that the new class also takes
    (AdamW's ``weight_decay: 0.01`` would go to SGD, seen only in ``--print_config``). Here such an
    argument is handed on with the new class's defaults written out; options given after it still
    override them.
    """
    expanded, position = [], 0
    while position < len(args):
        arg = args[position]
        key, has_value, value = arg.partition("=")
        if not has_value and position + 1 < len(args):
            value = args[position + 1]
        defaults = class_defaults(value) if key.startswith("--model.") and not key.endswith(".help") else None
        if defaults is None:
            expanded.append(arg)
        else:
            expanded.append(f"{key}={json.dumps({'class_path': value, 'init_args': defaults})}")
            position += 0 if has_value else 1
        position += 1
    return expanded


def class_defaults(path: str) -> dict[str, Any] | None:
    """The default of each argument of the class at the dotted ``path`` that has a plain default;
    None when ``path`` does not name an importable class."""
    parameters = class_parameters(path)
    if parameters is None:
        return None
    return {p.name: list(p.default) if isinstance(p.default, tuple) else p.default
            for p in parameters if p.default is not p.empty and is_plain_data(p.default)}


def class_parameters(path: str) -> list[inspect.Parameter] | None:
    """The arguments of the class at the dotted ``path``; None when it does not name an importable class."""
    module, _, name = path.rpartition(".")
    if not module or not re.fullmatch(r"[\w.]+", path):
        return None
    try:
        cls = getattr(importlib.import_module(module), name)
        return list(inspect.signature(cls).parameters.values()) if inspect.isclass(cls) else None
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


def misspelt_option(message: str, parser: ArgumentParser) -> tuple[str, str] | None:
    """``(option given, nearest valid option)`` for a misspelt option, worked out from jsonargparse's
    message (its wording checked with jsonargparse 4.53); None when the message does not say which
    option, or nothing valid is near it."""
    unknown = re.search(r"unrecognized arguments: --([\w.]+)|Option '([\w.]+)' is not accepted", message)
    if unknown is None:
        return None
    typo = unknown.group(1) or unknown.group(2)
    classes = re.findall(r"class_path[ =]'([\w.]+)'", message)
    if classes:  # inside a class given by class_path: its own arguments are the candidates
        prefix = ".".join(re.findall(r'Parser key "([\w.]+)"', message)) + "."
        parameters = class_parameters(classes[-1])
        if parameters is None:
            return None
        head, _, rest = typo.partition(".")
        match = difflib.get_close_matches(head, [p.name for p in parameters], n=1)
        return (prefix + typo, f"{prefix}{match[0]}{'.' + rest if rest else ''}") if match else None
    known = [key for key in parser.get_defaults().keys() if not key.startswith(("config", "__"))]
    match = difflib.get_close_matches(typo, known, n=1)
    return (typo, match[0]) if match else None


def model_options_given(args: list[str]) -> list[str]:
    """The ``model.*`` keys set on the command line (``--model.loss nll`` gives ``model.loss``)."""
    keys = [arg[2:].partition("=")[0] for arg in args if arg.startswith("--model.")]
    return [key for key in keys if not key.endswith(".help")]


def full_key(config: Any, key: str) -> str | None:
    """``key`` as stored in ``config``: the command line's ``model.optimizer.lr`` is kept under
    ``model.init_args.optimizer.init_args.lr`` for classes given by ``class_path``. None if absent."""
    parts = key.split(".")
    resolved = parts[0]
    for part in parts[1:]:
        if f"{resolved}.{part}" not in config and f"{resolved}.init_args.{part}" in config:
            resolved += ".init_args"
        resolved += f".{part}"
    return resolved if resolved in config else None


def keep_command_line_values(config: Any, given: dict[str, Any], fit: bool) -> list[str]:
    """Put back the command line's ``given`` values (``full_key`` -> value) that a checkpoint's
    hyperparameters replaced; returns a line for each, saying what the checkpoint had.

    ``fit`` continues the checkpoint's optimizer and schedule state, so another optimizer or
    schedule option there would not take effect (or not load): it is refused."""
    lines = []
    for key, value in given.items():
        if key not in config or config[key] == value:
            continue
        option, ours, theirs = key.replace(".init_args", ""), brief(value), brief(config[key])
        if fit and option.startswith(("model.optimizer", "model.lr_schedule")):
            raise UserError(f"--{option} {ours} differs from the checkpoint's {theirs}, and fit continues the "
                            "checkpoint's optimizer and schedule: drop the option, or start a new run")
        lines.append(f"{option}: {ours} from the command line, not the checkpoint's {theirs}")
        config[key] = value
    return lines


def brief(value: Any) -> str:
    """A class given by ``class_path`` as its path alone; anything else as itself."""
    return str(value.get("class_path")) if hasattr(value, "get") and value.get("class_path") else str(value)
