"""What a config, the command line or a checkpoint may name: nothing runs unless it is of the kind its option takes.

A config names classes by ``class_path`` (and functions by import path), and whatever it names is
called when the run is built: ``os.system`` given as a net with ``init_args`` would run a shell
command. Three rules, each checked before anything named is called:

- **Kinds.** Every class or function a config names is checked against the type of the option it
  is given for (``check_kinds``): a net or a loss must be a subclass of ``nn.Module``, an optimizer
  of ``torch.optim.Optimizer``, a callback, logger, plugin, profiler, strategy, data module or
  training module of its Lightning base class, and so on for every option of every class named,
  as its own type hints say. A function is accepted only for an option whose type is a function
  returning a plain value (``batch_size_fn``: it must declare that it returns an ``int``), or any
  function (a DDP communication hook: then only one from the trusted packages below). A class
  path for an option that takes no class (``Any``, untyped) is refused.
- **Checkpoints name only trusted packages.** A checkpoint's hyperparameters (a downloaded file
  can hold anything a ``weights_only`` load allows, class paths included) may name classes and
  functions only from ``TRUSTED_PACKAGES`` and the packages the user trusts: those the config
  names classes from, and ``--trusted_packages``. Checked before anything is imported
  (``check_checkpoint_hyperparameters``), then by kind. ``TrainingModule.load_from_checkpoint``
  does the same.
- **jsonargparse's import denylist is enforced** (``os``, ``subprocess``, ``builtins.exec``,
  ``pickle``, ``shutil``, ...: what no config has reason to name), and a class path given for an
  option typed ``Any`` is kept as data, not built (``set_parsing_settings``, set on import here).

Refusals are ``UserError``s of one line: the option, what it named, and the kind it takes.
"""

import collections.abc
import importlib
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from jsonargparse import set_parsing_settings
from typing_extensions import is_protocol

from project.errors import UserError

TRUSTED_PACKAGES = ("project", "torch", "torchvision", "lightning")
"""What a checkpoint may name without being told: this project and the libraries it trains with."""

VALUE_TYPES = (int, float, bool, str, torch.Tensor)
"""Return types of functions a config may name (``batch_size_fn: Callable[[Any], int]``)."""

# Every parse in this process: jsonargparse's own denylist raises instead of warning, and a
# class_path under an ``Any`` option stays a dict (jsonargparse 4.53.0 builds it by default).
set_parsing_settings(import_path_denylist=[], instantiate_subclass_spec_in_any=False)

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


class Kind(typing.NamedTuple):
    """What an option's type accepts of the things a config can name."""

    bases: tuple[type, ...] = ()
    """Classes named must derive from one of these (empty: the option takes no class)."""
    returns: tuple[type, ...] = ()
    """Functions named must declare that they return one of these."""
    any_function: bool = False
    """Functions of any return type (from trusted packages) are accepted."""

    def describe(self) -> str:
        parts = [f"a subclass of {' or '.join(map(type_name, self.bases))}"] if self.bases else []
        if self.returns:
            parts.append(f"a function declared to return {' or '.join(map(type_name, self.returns))}")
        if self.any_function:
            parts.append(f"a function from {', '.join(TRUSTED_PACKAGES)}")
        return " or ".join(parts) if parts else "no class or function (plain values only)"


def type_name(cls: type) -> str:
    """``cls`` by its shortest public path (``torch.nn.Module``, not ``torch.nn.modules.module.Module``)."""
    if cls.__module__ == "builtins":
        return cls.__name__
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        if getattr(sys.modules.get(".".join(parts[:end])), cls.__name__, None) is cls:
            return f"{'.'.join(parts[:end])}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def kind_of(hint: Any) -> Kind:
    """The kind of thing an option typed ``hint`` may be given by name."""
    bases: list[type] = []
    returns: list[type] = []
    any_function = False

    def visit(hint: Any) -> None:
        nonlocal any_function
        origin = typing.get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(hint):
                visit(arg)
        elif origin is collections.abc.Callable or hint in (collections.abc.Callable, typing.Callable):
            args = typing.get_args(hint)
            returned = args[-1] if args else Any
            if returned in VALUE_TYPES:
                returns.append(returned)
            elif inspect.isclass(returned) and returned not in (Any, object):
                bases.append(returned)  # a class of that kind, made with the arguments the option gets later
            else:
                any_function = True
        elif origin in (list, tuple, set, frozenset, collections.abc.Iterable, collections.abc.Sequence):
            for arg in typing.get_args(hint):
                if arg is not Ellipsis:
                    visit(arg)
        elif origin is None and inspect.isclass(hint) and hint not in (Any, object, type(None), *VALUE_TYPES) \
                and not issubclass(hint, (Mapping, str, bytes, int, float)) and not is_protocol(hint):
            bases.append(hint)

    visit(hint)
    return Kind(tuple(dict.fromkeys(bases)), tuple(dict.fromkeys(returns)), any_function)


def parameter_hints(cls: type) -> dict[str, Any]:
    """The type hint of each argument ``cls`` takes, its base classes' included (a subclass that
    hands ``**kwargs`` on to its base takes the base's arguments); for a dataclass, its fields."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        source = klass if klass is cls and hasattr(klass, "__dataclass_fields__") else klass.__dict__.get("__init__")
        if source is None or klass is object:
            continue
        try:
            found = typing.get_type_hints(source)
        except Exception:  # a hint that does not resolve here: the names it has, unchecked
            found = dict.fromkeys(getattr(source, "__annotations__", {}), Any)
        hints.update({name: hint for name, hint in found.items() if name != "return"})
    return hints


def imported(path: str) -> Any:
    """What the dotted ``path`` names (``module.Class``, ``module.Class.Inner``), or None."""
    if not IMPORT_PATH.fullmatch(path):
        return None
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for name in parts[split:]:
                found = getattr(found, name)
        except AttributeError:
            return None
        return found
    return None


def subclasses(cls: type) -> list[type]:
    """Every subclass of ``cls`` defined so far, at any depth."""
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def loaded_already(path: str) -> Any:
    """What ``path`` names in a module that is imported already (nothing is imported here), or None."""
    module, _, name = path.rpartition(".")
    return getattr(sys.modules.get(module), name, None)


def package_of(path: str) -> str:
    return path.split(".", 1)[0]


def is_trusted(path: str, trusted: Iterable[str]) -> bool:
    return package_of(path) in (*TRUSTED_PACKAGES, *trusted)


def function_path(function: Any) -> str:
    return f"{getattr(function, '__module__', None) or '?'}.{getattr(function, '__qualname__', repr(function))}"


def declared_return(function: Any) -> Any:
    try:
        return typing.get_type_hints(function).get("return", inspect.Signature.empty)
    except Exception:
        return inspect.Signature.empty


class KindCheck:
    """Walks a config (parsed, as a dict, or a checkpoint's hyperparameters) alongside the types of
    the options it sets; refuses, with one line, the first class or function of the wrong kind.

    ``trusted``: None for a config (any package, by kind); for a checkpoint, the packages beyond
    ``TRUSTED_PACKAGES`` it may name, checked before anything is imported. ``source`` starts the
    line (``checkpoint FILE: ``), ``option_prefix`` the option's name (``--`` on the command line),
    ``trust_option`` says how to trust a package.
    """

    def __init__(self, trusted: Iterable[str] | None = None, source: str = "", option_prefix: str = "--",
                 trust_option: str = "--trusted_packages {}") -> None:
        self.trusted = None if trusted is None else tuple(trusted)
        self.source = source
        self.option_prefix = option_prefix
        self.trust_option = trust_option

    def refuse(self, option: str, given: str, what: str, kind: Kind) -> typing.NoReturn:
        raise UserError(f"{self.source}{self.option_prefix}{option}: {given} {what}; this option takes {kind.describe()}")

    def resolve(self, option: str, path: str, kind: Kind) -> Any:
        """What ``path`` names, after the trust check; None where it names nothing importable
        (jsonargparse then says so itself)."""
        if self.trusted is not None and not is_trusted(path, self.trusted):
            loaded = loaded_already(path)  # its kind is the first thing wrong with it: no import needed to say so
            if loaded is not None:
                self.named(loaded, path, kind, option)
            trusted = ", ".join(dict.fromkeys((*TRUSTED_PACKAGES, *self.trusted)))
            raise UserError(
                f"{self.source}{self.option_prefix}{option}: {path} is from a package a checkpoint may not name (it may "
                f"name {trusted} and the packages the config names); this option takes {kind.describe()}; "
                f"if you trust this checkpoint, add {self.trust_option.format(package_of(path))}")
        return imported(path)

    def value(self, value: Any, hint: Any, option: str) -> None:
        """Check ``value``, given for an option typed ``hint``, and everything inside it."""
        if isinstance(value, Mapping):
            if "class_path" in value:
                self.spec(value, hint, option)
            else:  # the options of one class (a dataclass, the trainer's, or of a class named elsewhere)
                bases = kind_of(hint).bases
                self.arguments(value, parameter_hints(bases[0]) if len(bases) == 1 else {}, option)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                self.value(item, hint, f"{option}[{index}]" if len(value) > 1 else option)
        elif isinstance(value, str):
            kind = kind_of(hint)
            if (kind.bases or kind.returns or kind.any_function) and IMPORT_PATH.fullmatch(value):
                named = self.resolve(option, value, kind)
                if callable(named):  # a class or a function; a constant is data
                    self.named(named, value, kind, option)
        elif callable(value) and not isinstance(value, torch.nn.Module):  # a function a parse imported already
            path, kind = function_path(value), kind_of(hint)
            if self.trusted is not None and not is_trusted(path, self.trusted):
                self.resolve(option, path, kind)  # refuses it
            self.named(value, path, kind, option)

    def spec(self, spec: Mapping[str, Any], hint: Any, option: str) -> None:
        """A ``{class_path, init_args}`` entry: the class, then each of its arguments."""
        path = str(spec["class_path"])
        kind = kind_of(hint)
        if IMPORT_PATH.fullmatch(path):
            cls = self.resolve(option, path, kind)
        else:  # a class's name alone, which jsonargparse looks up among the subclasses of the option's type
            cls = next((sub for base in kind.bases for sub in subclasses(base) if sub.__name__ == path), None)
        if cls is None:
            return
        self.named(cls, path, kind, option)
        self.arguments({key: item for key, item in spec.items() if key != "class_path"}, parameter_hints(cls), option)

    def arguments(self, arguments: Mapping[str, Any], hints: Mapping[str, Any], option: str) -> None:
        """The arguments of one class, each by its type in ``hints`` (``init_args`` and ``dict_kwargs``
        hold more of them)."""
        for key, item in arguments.items():
            if key in ("init_args", "dict_kwargs") and isinstance(item, Mapping):
                self.arguments(item, hints, option)
            else:
                self.value(item, hints.get(key, Any), f"{option}.{key}")

    def named(self, named: Any, path: str, kind: Kind, option: str) -> None:
        """Refuse ``named`` (the class or function ``path`` names) unless it is of ``kind``."""
        if inspect.isclass(named):
            if not kind.bases:
                self.refuse(option, path, "is a class", kind)
            if not issubclass(named, kind.bases):
                self.refuse(option, path, "is a class of another kind", kind)
        elif kind.any_function and (self.trusted is not None or is_trusted(function_path(named), ())):
            return
        elif not kind.returns:
            self.refuse(option, path, "is a function" if callable(named) else "is not a class", kind)
        else:
            returned = declared_return(named)
            if not (inspect.isclass(returned) and issubclass(returned, kind.returns)):
                said = "declares no return type" if returned is inspect.Signature.empty else f"is declared to return {returned}"
                self.refuse(option, path, f"is a function that {said}", kind)


def check_kinds(config: Mapping[str, Any], hints: Mapping[str, Any], **how: Any) -> None:
    """Refuse (``UserError``) the first class or function ``config`` names that is not of the kind
    its option takes. ``hints``: the type of each top-level key (``model``, ``trainer``, ...)."""
    check = KindCheck(**how)
    for key, value in config.items():
        if key in hints:
            check.value(value, hints[key], key)


def check_given_configs(configs: Iterable[tuple[str, Mapping[str, Any]]], hints: Mapping[str, Any]) -> None:
    """``check_kinds`` on each config the command line gives (``(where, config)``, in order, before
    they are parsed): a config that sets a top-level class's options without naming the class
    (``model: {init_args: {loss: ...}}`` over a recipe) is read with the class an earlier one named."""
    classes: dict[str, Any] = {}
    for where, config in configs:
        completed = dict(config)
        for key, value in config.items():
            if isinstance(value, Mapping) and "class_path" in value:
                classes[key] = value["class_path"]
            elif isinstance(value, Mapping) and key in classes:
                completed[key] = {"class_path": classes[key], **value}
        check_kinds(completed, hints, source=where)


def check_checkpoint_hyperparameters(hparams: Mapping[str, Any], module_class: type, trusted: Iterable[str],
                                     source: str, trust_option: str = "--trusted_packages {}", option: str = "model") -> None:
    """Refuse a checkpoint whose hyperparameters name a class or function outside the trusted
    packages, or of the wrong kind, before anything they name is imported or called. The module's
    own class (``_class_path``) must be a subclass of ``module_class``; Lightning's ``_instantiator``
    is checked by Lightning itself against its own allowlist."""
    check = KindCheck(trusted, source=source, option_prefix=f"{option}.", trust_option=trust_option)
    class_path = hparams.get("_class_path")
    if isinstance(class_path, str):
        named = check.resolve("class_path", class_path, Kind((module_class,)))
        if named is not None:
            check.named(named, class_path, Kind((module_class,)), "class_path")
            module_class = named if inspect.isclass(named) else module_class
    hints = parameter_hints(module_class)
    for key, value in hparams.items():
        if not key.startswith("_"):
            check.value(value, hints.get(key, Any), key)


def packages_named(config: Any) -> set[str]:
    """The top-level packages of every class path in ``config`` (a dict of dicts and lists)."""
    found: set[str] = set()
    if isinstance(config, Mapping):
        if isinstance(config.get("class_path"), str):
            found.add(package_of(config["class_path"]))
        for value in config.values():
            found |= packages_named(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= packages_named(value)
    return found


def check_checkpoint_file(checkpoint_path: Any, module_class: type, trusted_packages: Iterable[str], given: Mapping[str, Any]) -> None:
    """``check_checkpoint_hyperparameters`` for what ``load_from_checkpoint(checkpoint_path, **given)``
    would build: the checkpoint's hyperparameters (a path or an open file, rewound after reading),
    with an ``hparams_file`` laid over them as Lightning does, less the arguments ``given`` in
    Python (code, not checked)."""
    import yaml

    from project.engine.checkpoint_io import read_checkpoint

    if isinstance(checkpoint_path, (str, Path)):
        content = read_checkpoint(Path(checkpoint_path))
    else:
        content = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        checkpoint_path.seek(0)
    hparams = dict(content.get("hyper_parameters") or {})
    if given.get("hparams_file"):
        hparams.update(yaml.safe_load(Path(given["hparams_file"]).read_text()) or {})
    hparams = {key: value for key, value in hparams.items() if key not in given}
    check_checkpoint_hyperparameters(hparams, module_class, trusted_packages, f"checkpoint {checkpoint_path}: ",
                                     trust_option="trusted_packages=[{!r}]")
