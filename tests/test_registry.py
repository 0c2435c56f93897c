"""Registries (utils.registry) and the model registry: registration, lookup, building, clear errors."""

import pytest
import torch

import model
from model.registry import build_model, list_models
from utils.registry import Registry, UnknownName


def test_bicubic_is_registered_and_is_identity() -> None:
    assert "bicubic" in list_models()
    net = build_model({"name": "bicubic"})
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(net(x), x)


def test_unknown_model_lists_registered() -> None:
    with pytest.raises(KeyError, match=r"model\.name: unknown model 'no_such_net'; registered: .*bicubic"):
        build_model({"name": "no_such_net"})


def test_unknown_kwarg_names_key_and_allowed() -> None:
    with pytest.raises(KeyError, match=r"model\.widht.*allowed: scale"):
        build_model({"name": "bicubic", "widht": 3})


def test_duplicate_name_rejected() -> None:
    with pytest.raises(KeyError, match="already registered"):

        @model.register_model("bicubic")
        class Other(torch.nn.Module):
            pass


def test_registry_register_get_names_contains() -> None:
    reg: Registry = Registry("colour")
    red = reg.register("red")(lambda: "r")
    reg.register("blue")(str)
    assert reg.get("red") is red and reg["blue"] is str
    assert reg.names() == ("red", "blue") and list(reg) == ["red", "blue"] and len(reg) == 2
    assert "red" in reg and "green" not in reg
    assert reg.register("red")(red) is red  # the same entry again is no conflict
    assert reg.pop("blue") is str and reg.names() == ("red",)


def test_registry_unknown_name_names_key_value_and_choices() -> None:
    reg: Registry = Registry("colour")
    reg.register("red")(int)
    reg.register("blue")(str)
    with pytest.raises(UnknownName) as err:
        reg.get("green", key="paint.colour")
    assert str(err.value) == "paint.colour: unknown colour 'green'; registered: blue, red"
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    with pytest.raises(KeyError, match=r"^unknown colour 'green'; registered: blue, red$"):
        reg["green"]
    with pytest.raises(KeyError, match="colour name 'red' is already registered"):
        reg.register("red")(float)
