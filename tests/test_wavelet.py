"""DWT2d / IDWT2d against PyWavelets and closed forms; the wavelet_l1 loss against a pywt oracle."""

import numpy as np
import pytest
import pywt
import torch

from model.losses import LOSS_REGISTRY, WeightedLoss
from model.wavelet import DWT2d, IDWT2d


@pytest.mark.parametrize("wavelet", ["sym4", "haar"])
def test_perfect_reconstruction(wavelet):
    x = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    low, highs = DWT2d(wavelet)(x)
    assert low.shape == (2, 3, 8, 12) and highs.shape == (2, 3, 3, 8, 12)
    torch.testing.assert_close(IDWT2d(wavelet)(low, highs), x, atol=1e-5, rtol=0)


def test_haar_ll_is_block_sum_over_two():
    x = torch.rand(1, 2, 6, 8, generator=torch.Generator().manual_seed(1))
    low, _ = DWT2d("haar")(x)
    block_sum = x[..., 0::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 0::2] + x[..., 1::2, 1::2]
    torch.testing.assert_close(low, block_sum / 2, atol=1e-6, rtol=0)


@pytest.mark.parametrize("wavelet", ["sym4", "haar"])
def test_bands_match_pywt_periodization(wavelet):
    x = np.random.default_rng(2).standard_normal((2, 3, 16, 24))
    low, highs = DWT2d(wavelet)(torch.from_numpy(x).float())
    for b in range(2):
        for c in range(3):
            ca, (ch, cv, cd) = pywt.dwt2(x[b, c], wavelet, mode="periodization")
            np.testing.assert_allclose(low[b, c].numpy(), ca, atol=1e-5)
            for i, band in enumerate((ch, cv, cd)):  # LH, HL, HH = pywt's cH, cV, cD
                np.testing.assert_allclose(highs[b, c, i].numpy(), band, atol=1e-5)


def test_band_semantics_lh_is_horizontal_detail():
    rows = torch.tensor([1.0, -1.0]).repeat(4).view(1, 1, 8, 1).expand(1, 1, 8, 8)  # varies along H only
    low, highs = DWT2d("haar")(rows)
    assert highs[:, :, 0].abs().max() > 1.9
    assert low.abs().max() < 1e-6 and highs[:, :, 1:].abs().max() < 1e-6


def test_odd_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"even H and W.*\(7, 8\)"):
        DWT2d("sym4")(torch.zeros(1, 1, 7, 8))


def _wavelet_l1_oracle(sr: np.ndarray, hr: np.ndarray, wavelet: str, weights) -> float:
    band_sums = np.zeros(4)
    count = 0
    for b in range(sr.shape[0]):
        for c in range(sr.shape[1]):
            ca_s, hs = pywt.dwt2(sr[b, c], wavelet, mode="periodization")
            ca_h, hh = pywt.dwt2(hr[b, c], wavelet, mode="periodization")
            pairs = [(ca_s, ca_h)] + list(zip(hs, hh))
            band_sums += [np.abs(s - h).sum() for s, h in pairs]
            count += ca_s.size
    return float(np.mean(np.asarray(weights) * band_sums / count))


@pytest.mark.parametrize(("wavelet", "weights"), [("haar", (1, 1, 1, 1)), ("sym4", (0.5, 1.0, 2.0, 3.0))])
def test_wavelet_l1_matches_pywt(wavelet, weights):
    rng = np.random.default_rng(3)
    sr, hr = rng.random((2, 3, 16, 16)), rng.random((2, 3, 16, 16))
    loss = LOSS_REGISTRY["wavelet_l1"](wavelet=wavelet, band_weights=list(weights))
    value = loss(torch.from_numpy(sr).float(), torch.from_numpy(hr).float())
    assert value.item() == pytest.approx(_wavelet_l1_oracle(sr, hr, wavelet, weights), rel=1e-5)


def test_wavelet_l1_unit_weights_is_mean_over_all_coefficients():
    sr, hr = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    low, highs = DWT2d("haar")(sr - hr)
    expected = torch.cat([low.flatten(), highs.flatten()]).abs().mean()
    torch.testing.assert_close(LOSS_REGISTRY["wavelet_l1"]()(sr, hr), expected)


def test_wavelet_l1_in_weighted_loss_and_bad_weights():
    total, parts = WeightedLoss([{"type": "l1", "weight": 1.0}, {"type": "wavelet_l1", "weight": 0.5}])(
        torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    )
    assert parts["wavelet_l1"] == pytest.approx(0.5)  # constant 1: LL = 2, details 0 -> mean (2+0+0+0)/4
    assert total.item() == pytest.approx(1.0 + 0.25)
    with pytest.raises(ValueError, match="band_weights"):
        WeightedLoss([{"type": "wavelet_l1", "band_weights": [1.0, 1.0]}])


def test_autocast_bf16_forward_and_backward():
    x = torch.randn(1, 2, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, highs = DWT2d("sym4")(x)
        y = IDWT2d("sym4")(low, highs)
    assert y.dtype == x.dtype
    y.square().sum().backward()
    torch.testing.assert_close(x.grad, 2 * x.detach(), atol=1e-4, rtol=1e-4)  # orthogonal: d|IDWT(DWT x)|^2 = 2x
