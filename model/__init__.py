"""Networks and their building blocks.

Every module directly inside ``model/`` is imported here so that its ``@register_model``
classes are in the registry; nothing here needs CUDA or mamba_ssm.
"""

import importlib
import pkgutil

from model.registry import MODEL_REGISTRY, build_model, list_models, register_model

for _info in pkgutil.iter_modules(__path__):
    if not _info.ispkg and not _info.name.startswith("_") and _info.name != "registry":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["MODEL_REGISTRY", "build_model", "list_models", "register_model"]
