"""VIFp: identities, agreement with piq.vif_p on real images (blur / noise), luminance choice, NaN rule."""

from __future__ import annotations

import math

import numpy as np
import piq
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data

from metrics.psnr_ssim import rgb_to_y
from metrics.vif import calculate_vif, luminance, main, vifp

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
        ours = calculate_vif(dist, ref, channel="y")
        theirs = piq_on(rgb_to_y(dist, "basicsr"), rgb_to_y(ref, "basicsr"))
        assert ours == pytest.approx(theirs, rel=TOL), (name, kind)
        assert 0 < ours < 1
        # the default: piq's own RGB path (grey 0.299 R + 0.587 G + 0.114 B)
        assert calculate_vif(dist, ref) == pytest.approx(piq_on(dist, ref), rel=TOL), (name, kind)
        assert calculate_vif(dist, ref) != pytest.approx(ours, rel=1e-3)


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
    assert summary["vif_channel"] == "gray" and "0.299R+0.587G+0.114B" in summary["convention"]
    assert (tmp_path / "p_vif_gray.csv").is_file() and sorted(p.name for p in (tmp_path / "p").iterdir()) == ["c.png"]
    summary = main(["--pred_dir", str(tmp_path / "p"), "--gt_dir", str(tmp_path / "g"), "--vif_channel", "y"])
    assert summary["vif"] == pytest.approx(calculate_vif(distortions(ref)["noise"], ref, channel="y"))
    assert summary["vif_channel"] == "y" and (tmp_path / "p_vif_y.csv").is_file()


def test_luminance_by_hand():
    px = np.array([[[200, 100, 50]]], dtype=np.uint8)
    assert luminance(px)[0, 0] == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50)  # 124.2
    assert luminance(px, "y")[0, 0] == pytest.approx(16 + (65.481 * 200 + 128.553 * 100 + 24.966 * 50) / 255)
    with pytest.raises(ValueError, match="channel"):
        luminance(px, "lab")


def test_flat_reference_is_nan_and_named(tmp_path, capsys):
    from PIL import Image

    flat = np.full((48, 48, 3), 128, np.uint8)
    assert math.isnan(vifp(luminance(crops()["camera"][:48, :48]), luminance(flat)))  # 0 / 0: no signal
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    ref = crops()["astronaut"][:48, :48]
    Image.fromarray(distortions(ref)["blur"]).save(tmp_path / "p" / "face.png")
    Image.fromarray(ref).save(tmp_path / "g" / "face.png")
    Image.fromarray(crops()["camera"][:48, :48]).save(tmp_path / "p" / "wall.png")
    Image.fromarray(flat).save(tmp_path / "g" / "wall.png")
    summary = main(["--pred_dir", str(tmp_path / "p"), "--gt_dir", str(tmp_path / "g")])
    out = capsys.readouterr().out
    assert summary["vif"] == pytest.approx(calculate_vif(distortions(ref)["blur"], ref))  # the finite one only
    assert summary["vif_excluded"] == {"wall": "nan"}
    assert "VIF: 1 of 2 image(s) not finite, left out of the mean: wall (nan)" in out and "inf" not in out
