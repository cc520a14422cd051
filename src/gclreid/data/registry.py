"""Dataset readers by name: ``@register_dataset`` and ``build_dataset``."""
from __future__ import annotations

import inspect
import os
import typing
from typing import Any, Callable, Dict, List, Tuple, Type

from ..errors import DatasetError
from .records import ReIDDataset

_REGISTRY: Dict[str, Type[ReIDDataset]] = {}  # canonical name -> class
_ALIASES: Dict[str, str] = {}  # alias -> canonical name


def register_dataset(name: str, aliases: Tuple[str, ...] = ()) -> Callable[[type], type]:
    """Class decorator: make a :class:`ReIDDataset` subclass available to ``build_dataset(name, …)``."""
    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, ReIDDataset)):
            raise TypeError(f"@register_dataset({name!r}) needs a subclass of ReIDDataset, got {cls!r}")
        for key in (name, *aliases):
            owner = _REGISTRY.get(_ALIASES.get(key.lower(), key.lower()))
            # Re-registering the same class (a module reloaded) is fine; a different one is a clash.
            if owner is not None and (owner.__module__, owner.__qualname__) != (cls.__module__, cls.__qualname__):
                raise DatasetError(f"dataset name {key!r} is already registered to "
                                   f"{owner.__module__}.{owner.__qualname__}")
        cls.name = name.lower()
        _REGISTRY[cls.name] = cls
        for alias in aliases:
            _ALIASES[alias.lower()] = cls.name
        return cls
    return decorate


def unregister_dataset(name: str) -> None:
    """Remove a registered name and its aliases (for tests and interactive sessions)."""
    canonical = _ALIASES.get(name.lower(), name.lower())
    _REGISTRY.pop(canonical, None)
    for alias in [a for a, c in _ALIASES.items() if c == canonical]:
        del _ALIASES[alias]


def list_datasets() -> List[str]:
    """Registered dataset names (aliases not included), sorted."""
    return sorted(_REGISTRY)


def dataset_aliases(name: str) -> List[str]:
    return sorted(a for a, c in _ALIASES.items() if c == name.lower())


def get_dataset_class(name: str) -> Type[ReIDDataset]:
    key = name.lower()
    cls = _REGISTRY.get(_ALIASES.get(key, key))
    if cls is None:
        names = ", ".join(list_datasets())
        raise DatasetError(f"unknown dataset {name!r}; registered datasets: {names}")
    return cls


def dataset_options(cls: Type[ReIDDataset]) -> Dict[str, inspect.Parameter]:
    """The keyword options a reader accepts: its ``__init__`` parameters after ``root``."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # drop self, root
    return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL,)}


def build_dataset(name: str, root: os.PathLike, **options: Any) -> ReIDDataset:
    """Read dataset ``name`` under ``root``. String option values (from the command line) are
    converted to the type the reader's ``__init__`` annotates (bool, int, float, optional); numbers
    given for a ``str`` option (YAML ``train_dir: 2019``) become strings."""
    cls = get_dataset_class(name)
    accepted = dataset_options(cls)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations (e.g. a class defined in a function): no conversion
        hints = {}
    converted = {}
    for key, value in options.items():
        if key not in accepted and not takes_any:
            names = ", ".join(k for k, p in accepted.items() if p.kind != p.VAR_KEYWORD) or "none"
            raise DatasetError(f"unknown option {key!r} for dataset {cls.name!r}; accepted options: {names}")
        if isinstance(value, str):
            converted[key] = _convert(cls.name, key, value, hints.get(key))
        else:
            converted[key] = _convert_to_str(cls.name, key, value, hints.get(key))
    return cls(root, **converted)


def dataset_from_config(data_cfg: Any, for_training: bool = False) -> ReIDDataset:
    """``build_dataset(data.name, data.root, **data.options)`` for a :class:`gclreid.config.DataConfig`.

    ``for_training=True`` (what ``gclreid.engine.train`` uses): with ``data.val_identities`` > 0 that
    many identities leave the training split and become the query/gallery (``data.val_seed`` draws
    them; see :func:`gclreid.data.validation.hold_out_identities`), so evaluation during training never
    sees the released test split. Without it (evaluation, generation) the released splits are returned.
    """
    from ..config import ConfigError
    from .validation import hold_out_identities
    val_ids, val_seed = getattr(data_cfg, "val_identities", 0), getattr(data_cfg, "val_seed", 0)
    for key, value in (("val_identities", val_ids), ("val_seed", val_seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"data.{key}={value!r}; expected an integer >= 0")
    options = {str(k): v for k, v in (data_cfg.options or {}).items()}
    dataset = build_dataset(data_cfg.name, data_cfg.root, **options)
    if for_training and val_ids > 0:
        dataset = hold_out_identities(dataset, val_ids, seed=val_seed)
    return dataset


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _convert(dataset: str, key: str, value: str, hint: Any) -> Any:
    if hint is None or hint is str or hint is Any:
        return value
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value.strip().lower() in ("", "none", "null"):
            return None
        return _convert(dataset, key, value, args[0] if len(args) == 1 else None)
    text = value.strip().lower()
    if hint is bool:
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise DatasetError(f"option {key}={value!r} for dataset {dataset!r}: expected a boolean (true/false)")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise DatasetError(f"option {key}={value!r} for dataset {dataset!r}: expected {hint.__name__}") from None
    return value


def _is_str_hint(hint: Any) -> bool:
    if typing.get_origin(hint) is typing.Union:  # Optional[str]
        return [a for a in typing.get_args(hint) if a is not type(None)] == [str]
    return hint is str


def _convert_to_str(dataset: str, key: str, value: Any, hint: Any) -> Any:
    """A non-string value for a ``str`` option: YAML reads ``train_dir: 2019`` as an int (and ``001``
    as 1, which cannot be undone), so numbers become their text; a path is kept; anything else is an error."""
    if value is None or isinstance(value, os.PathLike) or not _is_str_hint(hint):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DatasetError(f"option {key}={value!r} for dataset {dataset!r}: expected a string, "
                       f"got {type(value).__name__} (quote the value in YAML)")
