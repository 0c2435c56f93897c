"""LPIPS plumbing with a random trunk; offline backbone loading; real weights when present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from metrics.lpips import BACKBONES, backbone_weights_path, build_lpips, calculate_lpips, load_backbone, lpips_tensors


@pytest.fixture(scope="module")
def random_alex():
    torch.manual_seed(0)
    return build_lpips("alex", random_backbone=True)


def face_like(size: int = 48) -> np.ndarray:
    return data.astronaut()[30 : 30 + 4 * size : 4, 180 : 180 + 4 * size : 4].copy()


def noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_plumbing_random_trunk(random_alex):
    img = face_like()
    assert calculate_lpips(img, img, model=random_alex) == 0.0
    a, b = noisy(img, 10), noisy(img, 40)
    d_ab = calculate_lpips(a, img, model=random_alex)
    assert d_ab == pytest.approx(calculate_lpips(img, a, model=random_alex), rel=1e-5)
    assert 0 < d_ab < calculate_lpips(b, img, model=random_alex)
    # tensor API in [0, 1] gives the same numbers, per image
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1).float() / 255  # noqa: E731
    vals = lpips_tensors(random_alex, torch.stack([t(a), t(b)]), torch.stack([t(img), t(img)]))
    assert vals.shape == (2,)
    assert vals[0].item() == pytest.approx(d_ab, rel=1e-5)


def test_backbone_loaded_from_file(tmp_path, random_alex):
    torch.manual_seed(1)
    state = {"features." + k.split(".", 1)[1]: torch.randn_like(v) for k, v in random_alex.net.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    model = build_lpips("alex", weights=path)
    assert torch.equal(getattr(model.net.slice2, "3").weight, state["features.3.weight"])
    assert torch.equal(getattr(model.net.slice5, "10").bias, state["features.10.bias"])
    del state["features.8.weight"]
    torch.save(state, path)
    with pytest.raises(KeyError, match="features.8.weight"):
        load_backbone(model, path)


def test_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    for net, (filename, url) in BACKBONES.items():
        with pytest.raises(FileNotFoundError) as err:
            backbone_weights_path(net)
        msg = str(err.value)
        assert filename in msg and url in msg and str(tmp_path / "checkpoints" / filename) in msg
    with pytest.raises(FileNotFoundError, match="elsewhere.pth"):
        build_lpips("alex", weights=tmp_path / "elsewhere.pth")


def test_real_alexnet_weights_match_lpips_package():
    path = __import__("pathlib").Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES["alex"][0]
    if not path.is_file():
        pytest.skip(f"AlexNet ImageNet weights not in the torch hub cache ({path}); see metrics/lpips.py")
    import lpips

    img = face_like(64)
    blurred = noisy(img, 25)
    ours = calculate_lpips(blurred, img)
    reference = lpips.LPIPS(net="alex", version="0.1", verbose=False)  # torchvision reads the same cached file
    ref = reference(*(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1 for x in (blurred, img)))
    assert ours == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("content", [b"not a checkpoint at all\n" * 10, b"PK\x03\x04garbage", None])
def test_garbage_weights_file_one_line_error(tmp_path, content):
    from metrics.lpips import main
    from utils.cli import run_cli

    path = tmp_path / "alexnet.pth"
    if content is None:
        torch.save([1, 2, 3], path)  # a valid torch file that is not a state dict
    else:
        path.write_bytes(content)
    (tmp_path / "p").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            lambda: main(["--pred_dir", str(tmp_path / "p"), "--gt_dir", str(tmp_path / "p"), "--weights", str(path)])
        )
    message = str(exit_info.value.code)
    assert message.startswith("error: backbone weights file") and str(path) in message
    assert "alexnet-owt-7be5be79.pth" in message and "\n" not in message
