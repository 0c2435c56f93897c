"""data.value_range ([0, 1] / [-1, 1]) through train.py, and train.optimizer.weight_decay_policy."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import train
from model.hybrimamba import HybriMamba
from model.losses import WeightedLoss
from model.registry import MODEL_REGISTRY, register_model
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.config import ConfigError, load_config, resolve_config
from utils.value_range import from_network, predict_unit, to_network

ROOT = Path(__file__).resolve().parents[1]


class RangeProbe(nn.Module):
    """x * gain + shift, the identity at init (lr 0 keeps it); records the smallest and largest input it was fed."""

    seen: list[tuple[float, float]] = []

    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.gain = nn.Parameter(torch.ones(1))  # 1-D: exempt from decay under weights_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        RangeProbe.seen.append((float(x.min()), float(x.max())))
        return x * self.gain + self.shift


if "range_probe_net" not in MODEL_REGISTRY:
    register_model("range_probe_net")(RangeProbe)


def run(root: Path, value_range: list[int], *sets: str) -> tuple[dict, str]:
    cfg = {
        "name": "run",
        "seed": 5,
        "model": {"name": "range_probe_net"},
        "data": {
            "value_range": value_range,
            "train": {"type": "sample", "hr_size": 16, "num_workers": 0, "random_scale": False},
            "val": {"type": "sample", "hr_size": 16, "max_images": 4},
        },
        "train": {"batch_size": 2, "iterations": 1, "optimizer": {"type": "adamw", "lr": 0.0, "weight_decay": 0.1}},
        "logging": {"print_every": 1, "val_every": 1, "save_every": 1, "tensorboard": False, "progress_bar": False},
        "paths": {"experiments_root": str(root)},
    }
    path = root / "cfg.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    RangeProbe.seen.clear()
    assert train.main(["--config", str(path), *(["--set", *sets] if sets else [])]) == 0
    return load_checkpoint(root / "run" / "checkpoints" / "latest.pt"), (root / "run" / "train.log").read_text()


def test_conversions_round_trip_and_map_the_ends():
    x = torch.arange(256, dtype=torch.float32) / 255
    assert to_network(x, [0, 1]) is x and from_network(x, [0, 1]) is x
    assert to_network(torch.tensor([0.0, 0.5, 1.0]), [-1, 1]).tolist() == [-1.0, 0.0, 1.0]
    torch.testing.assert_close(from_network(to_network(x, [-1, 1]), [-1, 1]), x, rtol=0, atol=1e-7)
    assert torch.equal(predict_unit(lambda t: t * 0 - 1, x, [-1, 1]), torch.zeros_like(x))  # -1 out -> 0
    with pytest.raises(ValueError, match=r"data.value_range must be \[0, 1\] or \[-1, 1\], got \[0, 255\]"):
        to_network(x, [0, 255])


def test_l1_on_symmetric_range_is_twice_l1_on_unit_range():
    torch.manual_seed(0)
    sr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    loss = WeightedLoss([{"type": "l1"}])
    unit, _ = loss(sr, hr)
    symmetric, _ = loss(to_network(sr, [-1, 1]), to_network(hr, [-1, 1]))
    torch.testing.assert_close(symmetric, 2 * unit)


def test_train_feeds_the_network_its_range_and_scores_in_unit_range(tmp_path: Path):
    unit_state, unit_log = run(tmp_path / "unit", [0, 1])
    (lo, hi), unit_calls = RangeProbe.seen[0], len(RangeProbe.seen)  # the first training batch
    assert 0 <= lo < hi <= 1
    sym_state, sym_log = run(tmp_path / "sym", [-1, 1])
    assert RangeProbe.seen[0] == pytest.approx((2 * lo - 1, 2 * hi - 1)) and len(RangeProbe.seen) == unit_calls
    # the same identity network: the same validation PSNR (outputs converted back), and twice the L1 loss
    assert sym_state["best_psnr"] == pytest.approx(unit_state["best_psnr"], abs=1e-9)
    l1 = [float(re.search(r"iter 1/1 epoch \d+\s+l1 ([\d.]+)", log).group(1)) for log in (unit_log, sym_log)]
    assert l1[1] == pytest.approx(2 * l1[0], rel=1e-3)


def test_weight_decay_policy_all_decays_every_parameter():
    net = HybriMamba(embed_dim=4, depth=1, n_layers=1, d_state=2)
    params = list(net.parameters())
    decay, no_decay = train.param_groups(net, 0.02, "all")
    assert [id(p) for p in decay["params"]] == [id(p) for p in params] and no_decay["params"] == []
    assert decay["weight_decay"] == 0.02
    decay, no_decay = train.param_groups(net, 0.02)  # default: weights only
    exempt = {id(p) for p in no_decay["params"]}
    assert {id(m.A_logs) for m in net.modules() if hasattr(m, "A_logs")} <= exempt and decay["params"]
    with pytest.raises(ConfigError, match="weight_decay_policy' must be weights_only or all, got 'none'"):
        train.param_groups(net, 0.02, "none")


@pytest.mark.parametrize("policy, sizes", [("weights_only", (1, 1)), ("all", (2, 0))])
def test_weight_decay_policy_reaches_the_optimizer(tmp_path: Path, policy, sizes):
    state, _ = run(tmp_path, [0, 1], f"train.optimizer.weight_decay_policy={policy}")
    decay, no_decay = state["optimizer"]["param_groups"]
    assert (len(decay["params"]), len(no_decay["params"])) == sizes and decay["weight_decay"] == 0.1


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match=r"'data.value_range' must be one of \[\[0, 1\], \[-1, 1\]\]"):
        load_config(None, ["data.value_range=[0, 255]"])
    with pytest.raises(ConfigError, match="'train.optimizer.weight_decay_policy' must be one of"):
        load_config(None, ["train.optimizer.weight_decay_policy=biases"])


def test_test_py_runs_the_network_in_its_range(tmp_path: Path):
    """test.py's one hook (utils.value_range.predict_unit): shift 0.5 in [-1, 1] is +0.25 in [0, 1]."""
    spec = importlib.util.spec_from_file_location("fsr_test_script_range", ROOT / "test.py")
    inference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inference)
    net = RangeProbe()
    with torch.no_grad():
        net.shift.fill_(0.5)
    cfg = resolve_config({"model": {"name": "range_probe_net"}, "data": {"value_range": [-1, 1]}})
    save_checkpoint(
        {"model_name": "range_probe_net", "model": net.state_dict(), "config": cfg, "iteration": 0}, tmp_path / "c.pt"
    )
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 128, (16, 16, 3), dtype=np.uint8)
    (tmp_path / "lr").mkdir()
    Image.fromarray(pixels).save(tmp_path / "lr" / "a.png")
    args = [
        "--checkpoint",
        str(tmp_path / "c.pt"),
        "--lr_dir",
        str(tmp_path / "lr"),
        "--out_dir",
        str(tmp_path / "out"),
    ]
    inference.main([*args, "--hr_size", "16", "--no_progress", "--device", "cpu"])
    diff = np.asarray(Image.open(tmp_path / "out" / "images" / "a.png")).astype(int) - pixels
    assert diff.min() >= 63 and diff.max() <= 64  # 0.25 * 255 = 63.75, rounded or truncated when saved
