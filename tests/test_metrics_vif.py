"""VIFp: identities and agreement with piq.vif_p on real images (blur / noise), like with like."""

from __future__ import annotations

import numpy as np
import piq
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data

from metrics.psnr_ssim import rgb_to_y
from metrics.vif import calculate_vif, main, vifp

TOL = 1e-6  # relative; float64 on both sides, eps 1e-10 (ours, MATLAB) vs 1e-8 (piq) in flat-region tests


def crops() -> dict[str, np.ndarray]:
    camera = data.camera()[100:164, 200:264]
    return {
        "astronaut": data.astronaut()[40:104, 180:244],
        "camera": np.repeat(camera[..., None], 3, axis=2),
        "coffee": data.coffee()[100:180, 250:320],
    }


def distortions(img: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    blur = gaussian_filter(img.astype(float), sigma=(1.5, 1.5, 0))
    noise = img + rng.normal(0, 12, img.shape)
    return {k: np.clip(v, 0, 255).round().astype(np.uint8) for k, v in {"blur": blur, "noise": noise}.items()}


def piq_on(dist: np.ndarray, ref: np.ndarray, data_range: float = 255.0) -> float:
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    to4 = lambda a: t(a)[None, None] if a.ndim == 2 else t(a).permute(2, 0, 1)[None]  # noqa: E731
    return float(piq.vif_p(to4(dist), to4(ref), sigma_n_sq=2.0, data_range=data_range))


def test_identity_is_one():
    for img in crops().values():
        assert calculate_vif(img, img) == pytest.approx(1.0, abs=1e-9)  # eps in g = s12 / (s1 + eps)


@pytest.mark.parametrize("name", ["astronaut", "camera", "coffee"])
def test_matches_piq_on_same_luminance(name):
    ref = crops()[name]
    for kind, dist in distortions(ref).items():
        ours = calculate_vif(dist, ref)
        theirs = piq_on(rgb_to_y(dist, "basicsr"), rgb_to_y(ref, "basicsr"))
        assert ours == pytest.approx(theirs, rel=TOL), (name, kind)
        assert 0 < ours < 1
    # piq's own RGB path (full-range BT.601 Y) equals our core on that Y
    dist = distortions(ref)["blur"]
    y601 = lambda a: a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert vifp(y601(dist), y601(ref)) == pytest.approx(piq_on(dist, ref), rel=TOL)


def test_ordering_and_asymmetry():
    ref = crops()["astronaut"]
    mild = np.clip(gaussian_filter(ref.astype(float), (0.8, 0.8, 0)), 0, 255).astype(np.uint8)
    strong = np.clip(gaussian_filter(ref.astype(float), (2.5, 2.5, 0)), 0, 255).astype(np.uint8)
    assert calculate_vif(strong, ref) < calculate_vif(mild, ref) < 1
    assert calculate_vif(ref, strong) != pytest.approx(calculate_vif(strong, ref), rel=1e-3)


def test_size_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 41x41"):
        vifp(np.zeros((40, 50)), np.zeros((40, 50)))
    img = crops()["astronaut"]
    with pytest.raises(ValueError, match="differ"):
        calculate_vif(img[:50], img)


def test_script(tmp_path):
    from PIL import Image

    ref = crops()["coffee"]
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    Image.fromarray(distortions(ref)["noise"]).save(tmp_path / "p" / "c.png")
    Image.fromarray(ref).save(tmp_path / "g" / "c.png")
    summary = main(["--pred_dir", str(tmp_path / "p"), "--gt_dir", str(tmp_path / "g")])
    assert summary["vif"] == pytest.approx(calculate_vif(distortions(ref)["noise"], ref))
    assert (tmp_path / "p" / "vif.csv").is_file()
