"""What jsonargparse parses, and the one-line answer to an option it does not know.

The config flows one way: configs/base.yaml, then each ``--config``, then the command line, parsed
by jsonargparse, and nothing changes the parsed config afterwards. What a run takes from its
context goes in as one more config:

- ``with_checkpoint``, before the parse: what the checkpoint ``--ckpt_path`` names saved of its data
  module (under the configs) and of its model (over them; the command line still wins);
- ``with_context``, only when the parsed config says there is more: the checkpoint ``--resume auto``
  found, the W&B run a ``fit`` continues, the logger's folder under ``--trainer.default_root_dir``;
  the command line is then parsed once more with it.

A class named on the command line over another (``--model.optimizer torch.optim.SGD`` over the
recipe's AdamW) keeps the options the two share, as jsonargparse does for config files;
``kept_options`` says which, so that nothing is carried over silently.
"""

import difflib
import importlib
import importlib.util
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentParser

from project.errors import UserError
from project.engine.internals import model_config_of
from project.engine.kinds import imported, packages_named
from project.engine.loggers import next_free_name
from project.engine.paths import RUNS
from project.engine.preflight import is_file, read_yaml
from project.engine.resume import Checkpoint, read_named_checkpoint

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
NET_SIZE_OPTIONS = ("num_classes", "num_outputs", "d_out", "input_shape")  # what a net's first two arguments were called


def class_parameters(path: str) -> list[inspect.Parameter] | None:
    """The arguments of the class at the dotted ``path``; None when it does not name an importable class."""
    cls = imported(path)
    try:
        return list(inspect.signature(cls).parameters.values()) if inspect.isclass(cls) else None
    except (ValueError, TypeError):
        return None


# -- what the command line gives, before it is parsed ---------------------------------------------


def options_start(args: list[str]) -> int:
    """Where the options of ``args`` start: after the subcommand (``fit``), if one leads."""
    return 1 if args and not args[0].startswith("-") else 0


def given_configs(args: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """What each source on the command line sets, as ``(where, config)``, before jsonargparse reads
    it: each ``--config`` (a file, or YAML/JSON given inline), then the other options as one nested
    config (``--model.net.init_args.hidden 8`` as ``{"model": {"net": {"init_args": {"hidden": 8}}}}``,
    ``--trainer.callbacks+=X`` as a list). A config that does not read as YAML is left out:
    jsonargparse says what is wrong with it; one whose aliases expand past any config's size is
    refused (``preflight.read_yaml``). For ``engine.kinds``: a class of the wrong kind is refused
    with one line before jsonargparse imports anything a config names."""
    configs: list[tuple[str, dict[str, Any]]] = []
    options: dict[str, Any] = {}
    for group in option_groups(args[options_start(args):]):
        key, value = option_and_value(group)
        if not key.startswith("--") or value is None or key.endswith((".help", "print_config")):
            continue
        if key == "--config":
            if is_file(value):
                try:
                    text = Path(value).read_text(errors="replace")
                except OSError:  # unreadable: jsonargparse names it
                    continue
                configs.append((f"{value}: ", read_yaml(text, value)))
            elif isinstance(parsed := read_yaml(value, "--config"), dict):
                configs.append(("", parsed))
            continue
        parsed = read_yaml(value, key)
        *parents, last = key[2:].split(".")
        node = options
        for part in parents:
            node = child_options(node, part)
        if last.endswith("+"):
            parsed = parsed if isinstance(parsed, list) else [parsed]
        node[last.rstrip("+")] = parsed
    return [*((where, config) for where, config in configs if isinstance(config, dict)), ("", options)]


def child_options(node: dict[str, Any], key: str) -> dict[str, Any]:
    """Where ``--...KEY.option`` puts its option in ``node``: under ``node[KEY]``, or for a list
    (``--trainer.callbacks+=X`` before it), in its last entry, as jsonargparse does."""
    child = node.setdefault(key, {})
    if isinstance(child, list) and child:
        if isinstance(child[-1], str):
            child[-1] = {"class_path": child[-1]}
        child = child[-1]
    return child if isinstance(child, dict) else {}


# -- a checkpoint's arguments, and the run's context ---------------------------------------------


def checkpoint_named_in(sources: list[tuple[str, dict[str, Any]]]) -> Checkpoint | None:
    """The checkpoint file ``ckpt_path`` names in the configs and options given (``given_configs``;
    the last one given wins, as in jsonargparse), read once, before the command line is parsed; None
    when there is none."""
    named = None
    for _, config in sources:
        named = config.get("ckpt_path", named)
    return read_named_checkpoint(str(named)) if named not in (None, "") else None


def trusted_in(sources: list[tuple[str, dict[str, Any]]]) -> set[str]:
    """The packages beyond the project's that a checkpoint may name classes from (``engine.kinds``):
    ``--trusted_packages``, and the packages of the classes the configs and options given
    (``given_configs``) name, by ``class_path`` or as a bare path (``--model.net=mypkg.Net``)."""
    trusted: set[str] = set()
    for _, config in sources:
        listed = config.get("trusted_packages")
        trusted |= packages_named(config) | ({str(name) for name in listed} if isinstance(listed, list) else set())
        trusted |= {path.split(".")[0] for path in bare_paths(config) if importlib.util.find_spec(path.split(".")[0])}
    return trusted


def bare_paths(config: Any) -> list[str]:
    """The strings in ``config`` that read as dotted import paths (``mypkg.nets.Net``)."""
    if isinstance(config, dict):
        return [path for value in config.values() for path in bare_paths(value)]
    if isinstance(config, list):
        return [path for value in config for path in bare_paths(value)]
    return [config] if isinstance(config, str) and IMPORT_PATH.fullmatch(config) else []


def checkpoint_defaults(checkpoint: Checkpoint) -> dict[str, Any]:
    """What the checkpoint saved of its model and data module, as the parser's defaults: the base
    config, each ``--config`` and the command line go over them, so a checkpoint alone is enough to
    test, predict or export with, and anything given says otherwise (``checkpoint_differences``
    names what did). A module made in Python saved its arguments without its class: the configs
    must name it."""
    saved = {"model": checkpoint.hyperparameters, "data": checkpoint.data_hyperparameters}
    return {key: model_config_of(hparams, "") for key, hparams in saved.items() if isinstance(hparams.get("_class_path"), str)}


def context_settings(config: Any, subcommand: str | None, checkpoint: Checkpoint | None,
                     sources: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The values a run takes from its context, by key, set on the parsed config (the one step
    after parsing): the checkpoint ``--resume auto`` found; the run name of the checkpoint tested
    or continued, where no config or option names one (results go beside the run's own); the net's
    sizes it saved, where the config leaves them null (a run's ``config.yaml`` does: they came from
    the data); the W&B run a ``fit`` continues; the logger's folder under ``--trainer.default_root_dir``."""
    settings: dict[str, Any] = {}
    logger = config["trainer"].get("logger")
    if not hasattr(logger, "get"):
        logger = None
    logger_args = "trainer.logger.init_args."
    root = config["trainer"].get("default_root_dir")
    if root and logger is not None and (logger.get("init_args") or {}).get("save_dir") == RUNS:
        # Lightning's loggers keep their own save_dir: without this, default_root_dir would only
        # receive SLURM's requeue checkpoints. A save_dir given explicitly is kept.
        settings[logger_args + "save_dir"] = str(root)
    if checkpoint is not None:
        if checkpoint.found_by_resume_auto:
            settings["ckpt_path"] = str(checkpoint.path)
        name = checkpoint.saved_state.get("logger_name")
        if logger is not None and isinstance(name, str) and not any(names_logger(given) for _, given in sources):
            settings[logger_args + "name"] = name
        model = config["model"].get("init_args") or {}
        for size in NET_SIZE_OPTIONS:  # a run's config.yaml says null where the sizes came from the data
            if size in model and model[size] is None and checkpoint.hyperparameters.get(size) is not None:
                settings[f"model.init_args.{size}"] = checkpoint.hyperparameters[size]
        version = (logger.get("init_args") or {}).get("version") if logger is not None else None
        if subcommand == "fit" and isinstance(version, str) and not is_wandb(logger):  # continued beside it, never into it
            save_dir = settings.get(logger_args + "save_dir") or logger["init_args"].get("save_dir") or RUNS
            run_name = settings.get(logger_args + "name") or logger["init_args"].get("name") or ""
            settings[logger_args + "version"] = next_free_name(Path(save_dir) / str(run_name), version)
        run_id = checkpoint.saved_state.get("logger_run_id")
        if subcommand == "fit" and is_wandb(logger) and isinstance(run_id, str) and not logger["init_args"].get("id"):
            settings.update({logger_args + "id": run_id, logger_args + "resume": "allow"})  # W&B continues the run
    return settings


def names_logger(config: dict[str, Any]) -> bool:
    """Whether a config (or the options) given names the logger's run (``trainer.logger.init_args.name``)."""
    logger = (config.get("trainer") or {}).get("logger") if isinstance(config.get("trainer"), dict) else None
    return isinstance(logger, dict) and ("name" in logger or "name" in (logger.get("init_args") or {}))


def is_wandb(logger: Any) -> bool:
    return hasattr(logger, "get") and str(logger.get("class_path", "")).endswith("WandbLogger")


def flat_arguments(config: Any, prefix: str) -> dict[str, Any]:
    """A class's config as ``{dotted option: value}``, as the command line spells it: a class given
    by ``class_path`` is the option's value, its ``init_args`` its sub-options (``model.optimizer``
    is ``torch.optim.AdamW``, ``model.optimizer.lr`` 0.003); tuples read as lists."""
    config = plain(config)
    if isinstance(config, tuple):
        config = list(config)
    if not isinstance(config, dict):
        return {prefix: config}
    flat: dict[str, Any] = {prefix: config["class_path"]} if "class_path" in config else {}
    arguments = {key: value for key, value in config.items() if key not in ("class_path", "init_args")}
    for key, value in {**arguments, **(config.get("init_args") or {})}.items():
        flat.update(flat_arguments(value, f"{prefix}.{key}" if prefix else key))
    return flat


MAY_CHANGE_ON_RESUME = ("data.loader.num_workers", "data.loader.pin_memory", "data.loader.persistent_workers")


def checkpoint_differences(config: Any, checkpoint: Checkpoint, keys: tuple[str, ...] = ("model",)) -> dict[str, tuple[Any, Any]]:
    """``{option: (value here, the checkpoint's)}`` for each argument of ``keys`` (model, data) that
    the parsed config sets otherwise than the checkpoint saved. An argument null on either side is
    not compared: a net's sizes are null in a config (they come from the data), and a fine-tuned
    net's checkpoint drops where its pretrained weights came from (it holds the trained ones)."""
    saved = {"model": checkpoint.hyperparameters, "data": checkpoint.data_hyperparameters}
    differences = {}
    for key in keys:
        if not saved[key]:
            continue
        ours = flat_arguments(config[key], key)
        theirs = flat_arguments(model_config_of(saved[key], ours.get(key, "")), key)
        differences.update({option: (ours[option], value) for option, value in theirs.items()
                            if option in ours and None not in (ours[option], value) and ours[option] != value})
    return differences


def resume_refusal(config: Any) -> Any:
    """For ``--resume auto``: why a checkpoint is not this run's (None when it is): a model or data
    argument it was trained with differs from this run's config (apart from ``MAY_CHANGE_ON_RESUME``)."""

    def refusal(checkpoint: Checkpoint) -> str | None:
        differences = {option: values for option, values in checkpoint_differences(config, checkpoint, ("model", "data")).items()
                       if option not in MAY_CHANGE_ON_RESUME}
        if not differences:
            return None
        shown = "; ".join(f"{option} {brief(ours)} here, {brief(theirs)} there" for option, (ours, theirs) in list(differences.items())[:3])
        return f"it was trained with other settings ({shown}{'; ...' if len(differences) > 3 else ''})"

    return refusal


def config_files_end(args: list[str]) -> int:
    """The position in ``args`` just after the last ``--config FILE`` (or after the subcommand)."""
    end = options_start(args)
    for position, arg in enumerate(args):
        if arg == "--config":
            end = position + 2
        elif arg.startswith("--config="):
            end = position + 1
    return min(end, len(args))


def checkpoint_override_lines(config: Any, checkpoint: Checkpoint, args: list[str], fit: bool) -> list[str]:
    """A line for each model argument the configs or the command line set otherwise than the
    checkpoint ``--ckpt_path`` names saved (the given values win).

    ``fit`` continues the checkpoint's optimizer and schedule state, so another optimizer or
    schedule argument would not take effect (or not load): it is refused."""
    on_command_line, lines = set(model_options(args[config_files_end(args):])), []
    for option, (ours, theirs) in checkpoint_differences(config, checkpoint).items():
        given = next((o for o in on_command_line if option == o or option.startswith(o + ".")), None)
        if fit and option.startswith(("model.optimizer", "model.lr_schedule")):
            if given:
                raise UserError(f"--{option} {brief(ours)} differs from the checkpoint's {brief(theirs)}, and fit continues the "
                                "checkpoint's optimizer and schedule: drop the option, or start a new run")
            raise UserError(f"{option} is {brief(ours)} in the configs given but {brief(theirs)} in the checkpoint, and fit "
                            f"continues the checkpoint's optimizer and schedule: give --{option} {brief(theirs)}, or start a new run")
        lines.append(f"{option}: {brief(ours)} from the {'command line' if given else 'configs'}, not the checkpoint's {brief(theirs)}")
    return lines


def model_options(args: list[str]) -> list[str]:
    """The ``model.*`` keys set in ``args``, as written (``--model.optimizer.lr=0.1`` gives
    ``model.optimizer.lr``), each once."""
    keys = [arg[2:].partition("=")[0] for arg in args if arg.startswith("--model.")]
    return list(dict.fromkeys(key.replace(".init_args", "") for key in keys if not key.endswith(".help")))


def model_classes_named(args: list[str]) -> list[tuple[str, str, list[inspect.Parameter]]]:
    """``(option, class path, its arguments)`` for each class the command line names under
    ``--model`` after the config files (``--model.optimizer torch.optim.SGD``)."""
    command_line, named = args[config_files_end(args):], []
    for position, arg in enumerate(command_line):
        key, has_value, value = arg.partition("=")
        if key.startswith("--model.") and not key.endswith(".help"):
            value = value if has_value else (command_line[position + 1] if position + 1 < len(command_line) else "")
            if (parameters := class_parameters(value)) is not None:
                named.append((key[2:].replace(".init_args", ""), value, parameters))
    return named


def kept_options(sources: list[tuple[str, dict[str, Any]]], final: Any, args: list[str]) -> list[str]:
    """A line for each class named on the command line over a class the configs given name, that
    kept options of the one it replaced: jsonargparse keeps the options the two share, so SGD named
    over the recipe's AdamW keeps its lr and weight_decay. Options given on the command line, and
    values equal to the new class's own defaults, are not listed."""
    given, lines = set(model_options(args[config_files_end(args):])), []
    configured: dict[str, Any] = {}
    for _, config in sources[:-1]:  # the configs, without the command line's options
        configured.update({key: value for key, value in flat_arguments(config.get("model"), "model").items() if config.get("model")})
    for option, value, parameters in model_classes_named(args):
        old = configured.get(option)
        after = full_key(final, option)
        if not isinstance(old, str) or old == value or after is None or not isinstance(new := plain(final[after]), dict):
            continue
        defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        kept = {name: v for name, v in (new.get("init_args") or {}).items() if f"{option}.{name}" not in given
                and configured.get(f"{option}.{name}", defaults.get(name)) == v != defaults.get(name)}
        if kept:
            lines.append(f"--{option} {value} keeps {', '.join(f'{k}={v!r}' for k, v in kept.items())} of "
                         f"{old}, which it replaces (the options they share); give them after it to change them")
    return lines


def plain(value: Any) -> Any:
    """A parsed config's value as plain dicts and lists."""
    return value.as_dict() if hasattr(value, "as_dict") else value


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


def brief(value: Any) -> str:
    """A class given by ``class_path`` as its path alone; anything else as itself."""
    return str(value.get("class_path")) if hasattr(value, "get") and value.get("class_path") else str(value)


# -- the one-line answer to a refused command line ---------------------------------------------------
# jsonargparse's refusal is many lines deep. The option it refused is found by parsing again without
# one given option (or config) at a time; the config that then parses says what the options are.


CLASS_HOMES = ("project.nets", "project.lightning_modules", "project.datamodules", "torch.optim", "torch.nn",
               "lightning.pytorch.callbacks", "lightning.pytorch.loggers")  # where a misspelt short class name is looked for


def refusal_line(parser: ArgumentParser, args: list[str], message: str, option_types: dict[str, Any]) -> str | None:
    """The one-line answer to jsonargparse's refusal (``message``) of ``args``: the option (or the
    config file) it refused, with the nearest valid option or class, or the types the option takes,
    or the library's own innermost line. None when no single option or config is to blame."""
    start = options_start(args)
    groups = option_groups(args[start:])
    for position in reversed(range(len(groups))):
        rest = [token for group in groups[:position] + groups[position + 1:] for token in group]
        parsed = parsed_or_none(parser, [*args[:start], *rest])
        if parsed is None:
            continue
        parsed = parsed[args[0]] if start else parsed
        key, value = option_and_value(groups[position])
        value = "" if value is None else value
        if key in ("--config", "-c"):
            return config_refusal_line(value, parsed, message)
        return option_refusal_line(key[2:].rstrip("+"), value, parsed, message, option_types)
    return None


def option_groups(args: list[str]) -> list[list[str]]:
    """``args`` as one list per option: ``["--key=value"]`` or ``["--key", "value"]`` (a value is
    any token that is not an option: ``-5`` is a value)."""
    groups: list[list[str]] = []
    for token in args:
        if token.startswith("--") or (token.startswith("-") and not token[1:2].isdigit() and token[1:2] != "."):
            groups.append([token])
        elif groups:
            groups[-1].append(token)
        else:
            groups.append([token])
    return groups


def option_and_value(group: list[str]) -> tuple[str, str | None]:
    """An option of ``option_groups`` as ``(--key, its value)``; the value is None for a flag."""
    key, has_value, value = group[0].partition("=")
    return key, value if has_value else (group[1] if len(group) > 1 else None)


def parsed_or_none(parser: ArgumentParser, args: list[str]) -> Any:
    """``args`` parsed by ``parser``, or None where it refuses them (said nowhere)."""
    exit_on_error, parser.exit_on_error = parser.exit_on_error, False
    try:
        return parser.parse_args(args)
    except (Exception, SystemExit):  # noqa: BLE001  (any refusal: only whether it parses matters here)
        return None
    finally:
        parser.exit_on_error = exit_on_error


def known_options(parsed: Any) -> dict[str, Any]:
    """Every option of a parsed config as the command line spells it (``model.optimizer.lr``), with its value."""
    return flat_arguments(parsed, "") if parsed is not None else {}


def option_refusal_line(option: str, value: str, parsed: Any, message: str, option_types: dict[str, Any]) -> str:
    option = option.replace(".init_args", "")
    known = known_options(parsed)
    if option not in known and not any(key.startswith(option + ".") for key in known):
        return unknown_option_line(option, known, message)
    current = known[option] if option in known else None
    takes_classes = isinstance(current, str) and IMPORT_PATH.fullmatch(current) or (
        isinstance(current, list) and any(isinstance(v, dict) and "class_path" in v for v in current))
    if takes_classes and re.fullmatch(r"[A-Za-z_][\w.]*", value) and imported(value) is None:
        return no_class_line(option, value)
    types = takes(option, parsed, option_types)
    if types:
        return f"error: --{option}: {value!r} is not a valid value (it takes {types})"
    return f"error: --{option}: {value!r} is not a valid value: {innermost_line(message)}"


def unknown_option_line(option: str, known: dict[str, Any], message: str) -> str:
    """The nearest option that exists: a sibling of the same class, then one of the same name
    elsewhere under the same key (``data.loader.batch_size`` for ``data.batch_size``), then any;
    where nothing is near, what the class takes. Never the option itself; for a net's size, where
    sizes come from."""
    parent, _, name = option.rpartition(".")
    if parent == "model.net" and (name in NET_SIZE_OPTIONS or name in [p.name for p in (class_parameters(str(known.get(parent))) or [])[:2]]):
        return (f"error: --{option}: a net's number of outputs and input shape come from the data (and from a checkpoint): "
                "leave the option out")
    siblings = {key.rpartition(".")[2]: key for key in known if key.rpartition(".")[0] == parent and key != option}
    same_top = {key: key.rpartition(".")[2] for key in known if key.split(".")[0] == option.split(".")[0] and key != option}
    meant = next(iter(difflib.get_close_matches(name, list(siblings), n=1)), None)
    meant = siblings[meant] if meant else None
    if meant is None:
        near = [key for key, last in same_top.items() if difflib.get_close_matches(name, [last], n=1, cutoff=0.8)]
        meant = next(iter(difflib.get_close_matches(option, near, n=1, cutoff=0)), None)
    if meant is None and siblings and isinstance(known.get(parent), str):  # an argument of a class: what the class takes
        return f"error: unknown option --{option}: {known[parent]} takes {', '.join(sorted(siblings))}"
    if meant is None:
        meant = next(iter(difflib.get_close_matches(option, [key for key in known if key != option], n=1)), None)
    return f"error: unknown option --{option}: did you mean --{meant}?" if meant else f"error: unknown option --{option}: {innermost_line(message)}"


def no_class_line(option: str, given: str) -> str:
    """For a class path that does not import: the nearest class that exists."""
    module_name, _, name = given.rpartition(".")
    homes = [module_name] if module_name else list(CLASS_HOMES)
    candidates: dict[str, str] = {}
    for home in homes:
        try:
            module = importlib.import_module(home)
        except ImportError as error:  # no such module, or one that fails to import: its own error says which
            return f"error: --{option}: cannot import {given}: {error}"
        candidates.update({n: f"{home}.{n}" for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")})
    match = difflib.get_close_matches(name, list(candidates), n=1)
    return f"error: --{option}: no class {given}" + (f"; did you mean {candidates[match[0]]}?" if match else "")


def config_refusal_line(config: str, parsed: Any, message: str) -> str:
    """For a config refused as a whole: an option in it that does not exist, with the nearest one;
    else the library's own innermost line."""
    known = known_options(parsed)
    try:
        text = Path(config).read_text(errors="replace") if is_file(config) else config
        given = flat_arguments(read_yaml(text, config), "")
    except (OSError, UserError):
        given = {}
    for option in (key.replace(".init_args", "") for key in given):
        if option and option not in known and not any(key.startswith(option + ".") for key in known):
            return unknown_option_line(option, known, message).replace("error: ", f"error: --config {config}: ", 1)
    said = " ".join(message.split())  # the library's own words about the file (a YAML error and where), on one line
    return f"error: --config {config}: {said[:400]}{' ...' if len(said) > 400 else ''}"


def innermost_line(message: str) -> str:
    """The library's own words at the deepest level of its message (the most indented line, the first
    of them): what it said about the innermost value, without the outer lines about the classes around it."""
    lines = [line for line in message.splitlines() if line.strip()]
    if not lines:
        return message.strip()
    depth = max(len(line) - len(line.lstrip()) for line in lines)
    line = next(line for line in lines if len(line) - len(line.lstrip()) == depth).strip().removeprefix("- ")
    return line[:300] + " ..." if len(line) > 300 else line


def takes(option: str, parsed: Any, option_types: dict[str, Any]) -> str | None:
    """What ``option`` takes, read from the annotation of the argument it sets (``int or null``);
    None where no annotation says."""
    top, *parts = option.split(".")
    node, owner, annotation = plain(parsed).get(top), option_types.get(top), None
    for part in parts:
        arguments = node if isinstance(node, dict) else {}
        if arguments.get("class_path"):
            owner, arguments = imported(str(arguments["class_path"])), arguments.get("init_args") or {}
        annotation = argument_annotation(owner, part)
        if annotation is None:
            return None
        owner, node = annotation, arguments.get(part)
    return type_words(annotation) if annotation is not None else None


def argument_annotation(owner: Any, name: str) -> Any:
    """The annotation of argument ``name`` of class ``owner`` (its own or a base's ``__init__``, or a dataclass field)."""
    if typing.get_origin(owner) in (typing.Union, types.UnionType):  # LoaderOptions | None: the class in it
        owner = next((a for a in typing.get_args(owner) if inspect.isclass(a)), None)
    if not inspect.isclass(owner):
        return None
    for cls in owner.__mro__:
        try:
            hints = typing.get_type_hints(cls.__init__) if "__init__" in vars(cls) else {}
        except Exception:  # noqa: BLE001  (an annotation that does not evaluate: read the raw one)
            hints = {n: p.annotation for n, p in inspect.signature(cls).parameters.items() if p.annotation is not p.empty}
        if name in hints:
            return hints[name]
    return None


def type_words(annotation: Any) -> str:
    """A type as a user reads it: ``int | None`` as ``int or null``, ``Literal['a', 'b']`` as ``'a' or 'b'``."""
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(type_words(a) for a in typing.get_args(annotation)))
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if annotation is str:
        return "text"
    return getattr(annotation, "__name__", None) if typing.get_origin(annotation) is None else str(annotation).replace("typing.", "")
