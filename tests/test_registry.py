"""Model registry: registration, building, clear errors."""

import pytest
import torch

import model
from model.registry import build_model, list_models


def test_bicubic_is_registered_and_is_identity() -> None:
    assert "bicubic" in list_models()
    net = build_model({"name": "bicubic"})
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x), x)


def test_unknown_model_lists_registered() -> None:
    with pytest.raises(KeyError, match="registered models: .*bicubic"):
        build_model({"name": "no_such_net"})


def test_unknown_kwarg_names_key_and_allowed() -> None:
    with pytest.raises(KeyError, match=r"model\.widht.*allowed: scale"):
        build_model({"name": "bicubic", "widht": 3})


def test_duplicate_name_rejected() -> None:
    with pytest.raises(KeyError, match="already registered"):

        @model.register_model("bicubic")
        class Other(torch.nn.Module):
            pass
