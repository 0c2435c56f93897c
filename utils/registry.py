"""Named choices: one small ``Registry`` class and the project's registries (BasicSR's layout).

The registries are declared here, at the bottom of the import graph, and filled by the modules that
define their entries when their package is imported: ``@MODEL_REGISTRY.register("rhmc")`` in
``model/rhmc.py``, ``@DATASET_REGISTRY.register("paired")`` in ``data/datasets.py``. A name is
declared once, where it is implemented; the config schema (:mod:`utils.schema`) takes its choices
from here without importing ``model`` or ``data``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name that is not registered (a KeyError for lookups, a ValueError for config checks)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class Registry(Generic[T]):
    """Entries of one ``kind`` (``"model"``, ``"loss"``, ...) by name, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding a class or function under ``name``; a name taken by another entry is a KeyError."""

        def add(entry: T) -> T:
            if self._entries.get(name, entry) is not entry:
                raise KeyError(f"{self.kind} name {name!r} is already registered by {self._entries[name]!r}")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """The entry of ``name``; otherwise :class:`UnknownName` naming ``key`` (the config key, if any), the name
        and the registered choices (sorted)."""
        if name not in self._entries:
            where = f"{key}: " if key else ""
            raise UnknownName(f"{where}unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._entries)

    def pop(self, name: str) -> T:
        """Remove ``name`` and return its entry (for entries registered for a while, e.g. by a test)."""
        return self._entries.pop(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def constructor_kwargs(cls: type) -> dict[str, Any]:
    """Keyword arguments of ``cls``'s constructor with their defaults (None where there is none)."""
    params = inspect.signature(cls.__init__).parameters
    return {
        k: (None if p.default is inspect.Parameter.empty else p.default)
        for k, p in params.items()
        if k != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


MODEL_REGISTRY: Registry = Registry("model")  # networks (model/*.py), built by model.build
LOSS_REGISTRY: Registry = Registry("loss")  # training losses (model/losses.py)
SCAN_BACKEND_REGISTRY: Registry = Registry("ssm backend")  # selective-scan backends (model/ssm), in auto's order
DATASET_REGISTRY: Registry = Registry("dataset")  # data.train / data.val types (data/datasets.py)
RESIZE_KERNEL_REGISTRY: Registry = Registry("resize kernel")  # bicubic kernels (data/degrade.py)
FIT_REGISTRY: Registry = Registry("fit")  # HR fitting before the resize (data/degrade.py)
SCHEDULER_REGISTRY: Registry = Registry("scheduler")  # learning-rate schedules (utils/scheduler.py)
