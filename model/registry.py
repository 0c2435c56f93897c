"""Networks by name (``MODEL_REGISTRY``, :mod:`utils.registry`), built from the ``model`` config section."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from utils.registry import MODEL_REGISTRY, constructor_kwargs

register_model: Callable[[str], Callable[[type[nn.Module]], type[nn.Module]]] = MODEL_REGISTRY.register
"""Class decorator adding a network to the registry under a name: ``@register_model("rhmc")``."""


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODEL_REGISTRY)


def build_model(cfg: dict[str, Any]) -> nn.Module:
    """Build a network from a ``model`` config section: ``{name: ..., **kwargs}``."""
    cfg = dict(cfg)
    if "name" not in cfg:
        raise KeyError(f"model config needs a 'name'; registered: {', '.join(MODEL_REGISTRY)}")
    name = cfg.pop("name")
    cls = MODEL_REGISTRY.get(name, key="model.name")
    allowed = constructor_kwargs(cls)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise KeyError(
            f"unknown key(s) model.{', model.'.join(unknown)} for model {name!r}; allowed: {', '.join(sorted(allowed))}"
        )
    return cls(**cfg)


def check_training_io(
    net: nn.Module, name: str, outputs: set[str], targets: set[str], data: set[str], points: int | None = None
) -> None:
    """ValueError unless the losses read outputs the network gives in train mode (``training_outputs``,
    default ``("sr",)``) and the data gives every target the losses and the network (``training_targets``)
    need beyond the HR; ``data`` names what the training items carry besides lr / hr, ``points`` the
    landmarks per face of the data, which must equal the network's ``keypoints`` when it has them."""
    given = tuple(getattr(net, "training_outputs", ("sr",)))
    unknown = sorted(outputs - set(given))
    if unknown:
        raise ValueError(
            f"train.losses read output(s) {unknown} that model {name!r} does not give; it gives {list(given)}"
        )
    needed = (targets | set(getattr(net, "training_targets", ()))) - {"hr"}
    missing = sorted(needed - data)
    if missing == ["heatmap"]:
        raise ValueError(
            f"model {name!r} trains on landmark heatmaps but data.train has no landmarks; set data.train.landmarks "
            "to the set's landmark file (DIC annotation .pkl, CelebA list_landmarks_align_celeba.txt, or the "
            "landmarks.json of data.prepare --landmarks)"
        )
    if missing:
        raise ValueError(
            f"model {name!r} / train.losses need {missing} in the training data, which gives {sorted(data)}"
        )
    wanted = getattr(net, "keypoints", None)
    if points is not None and wanted is not None and points != wanted:
        raise ValueError(
            f"model {name!r} predicts {wanted} landmark heatmaps but data.train.landmarks gives {points} points "
            f"per face; set model.keypoints={points}"
        )
