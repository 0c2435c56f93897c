"""tools.convert_released: released key names (from the authors' code), round trips, hand-built dicts, errors."""

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import build_model
from tests.helpers.released_reference import released_hybrimamba_forward, released_rhmc_forward
from tools import convert_released
from tools.convert_released import haar_filter, to_ours, to_released
from utils.checkpoint import load_checkpoint
from utils.config import load_config

pytestmark = pytest.mark.usefixtures("single_thread")

C = 4  # tiny embed_dim
SETS = {
    "hybrimamba": [f"model.embed_dim={C}", "model.d_state=2", "model.depth=2", "model.n_layers=2"],
    "rhmc": [f"model.embed_dim={C}", "model.d_state=2", "model.depth=2"],
}


def preset(name: str, *extra: str, seed: int = 1) -> torch.nn.Module:
    """The tiny released preset with every parameter moved off its init (ECA kernels, if any, stay identities)."""
    cfg = load_config(f"configs/{name}_released.yaml", [*SETS[name], *extra])
    torch.manual_seed(seed)
    model = build_model(cfg["model"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name, extra", [("hybrimamba", ()), ("rhmc", ()), ("rhmc", ("model.stb_band_copies=1",))])
def test_round_trip_ours_released_ours_is_identical(name, extra):
    model = preset(name, *extra)
    released = to_released(model.state_dict(), name, C)
    assert all(k.startswith({"hybrimamba": "module.", "rhmc": "module.FDBNet."}[name]) for k in released)
    assert_same_state(to_ours(released, name, preset(name, *extra, seed=2), C), model.state_dict())


def test_released_key_names_are_the_authors():
    """A few names and shapes written by hand from HibriMambaBlock.py / mamba.py and SHMC.py."""
    hm = to_released(preset("hybrimamba").state_dict(), "hybrimamba", C)
    stage = "module.encoderlayer_bottom.layers.1"  # HibriMamba(4c): layers[i] = [PreNorm(Mamba), PreNorm(LEM)]
    expected = {
        "module.shallow_conv.weight": (C, 3, 3, 3),
        "module.out.weight": (3, 2 * C, 3, 3),
        "module.pool1.conv.op.0.weight": (2 * C, 1, 4, 4),
        "module.Upsample1.deconv.op.1.weight": (4 * 2 * C, 8 * C, 1, 1),
        f"{stage}.0.norm.weight": (4 * C,),
        f"{stage}.0.fn.layers.1.norm.weight": (4 * C,),
        f"{stage}.0.fn.layers.1.mixer.freq_model.fft_conv.2.weight": (6 * C, 6 * C, 1, 1),
        f"{stage}.0.fn.layers.1.mixer.freq_model.wave_conv.bias": (6 * C,),
        f"{stage}.0.fn.layers.1.mixer.symmetry_enhance.symmetry_weight": (),
        f"{stage}.0.fn.layers.1.mixer.A_logs": (4 * 6 * C, 2),
        f"{stage}.1.fn.ca.1.att.3.weight": (4 * C, 1, 1, 1),
        f"{stage}.1.fn.gate.3.weight": (4 * C, 8 * C),
        f"{stage}.1.fn.smooth.bias": (4 * C,),
    }
    assert {k: tuple(hm[k].shape) for k in expected} == expected
    assert not any(k.startswith("module.decoderlayer_3.") for k in hm)  # top_decoder: false
    rh = to_released(preset("rhmc").state_dict(), "rhmc", C)
    block = "module.FDBNet.encoderlayer_3.HMCB"  # HMCBS(8c): one shared HMCB
    expected = {
        "module.FDBNet.pool2.weight": (8 * C, 4 * C, 4, 4),
        "module.FDBNet.encoderlayer_bottom.norm.bias": (8 * C,),
        "module.FDBNet.high0_LH.weight": (2 * C, 2 * C, 3, 3),  # twice the input channels
        "module.FDBNet.high2_HL.bias": (8 * C,),
        "module.FDBNet.Upsample0.weight": (8 * C, 8 * C, 2, 2),
        "module.FDBNet.up1.weight": (4 * C, 8 * C, 1, 1),
        "module.FDBNet.wave_pool1.LH.weight": (4 * C, 1, 2, 2),
        "module.FDBNet.recon_block0.HH.weight": (8 * C, 1, 2, 2),
        f"{block}.skip_scale2": (8 * C,),
        f"{block}.ln_1.weight": (8 * C,),
        f"{block}.dwconv.1.running_var": (8 * C,),
        f"{block}.channel_interaction.conv.weight": (1, 1, 3),
        f"{block}.spatial_interaction.3.weight": (1, 2, 1, 1),
        f"{block}.mamba_b.skip_scale": (8 * C,),
        f"{block}.mamba_b.self_attention.dt_projs_bias": (4, 16 * C),
        f"{block}.mamba_b.ACG.gate.2.weight": (8 * C, 2),
        f"{block}.mamba_b.FAMblk.pos_enc2.weight": (8 * C, 1, 3, 3),
        f"{block}.mamba_b.FAMblk.conv_spatial2_1.bias": (8 * C,),
    }
    assert {k: tuple(rh[k].shape) for k in expected} == expected


def test_hand_built_released_entries_land_where_expected():
    """Known values in a released-style dict (no wrapper prefixes) -> the expected tensors of ours."""
    released = {
        k.removeprefix("module.FDBNet."): v for k, v in to_released(preset("rhmc").state_dict(), "rhmc", C).items()
    }
    pair = torch.arange(2 * C * 2 * C * 9, dtype=torch.float32).view(2 * C, 2 * C, 3, 3)
    released["high0_LH.weight"] = pair  # their LH -> our HL, input channels 2i and 2i+1 summed
    released["high0_LH.bias"] = torch.full((2 * C,), 0.25)
    released["high0_HL.bias"] = torch.arange(2 * C, dtype=torch.float32)
    released["high0_LL.bias"] = torch.full((2 * C,), 0.5)
    released["encoderlayer_1.HMCB.mamba_b.ln_1.weight"] = torch.full((2 * C,), 3.0)
    released["decoderlayer_3.norm.bias"] = torch.full((2 * C,), -1.0)
    ours = to_ours(released, "rhmc", preset("rhmc", "model.stb_band_copies=1"), C)
    assert torch.equal(ours["fusion1.stb.conv_hl.weight"], pair[:, 0::2] + pair[:, 1::2])
    assert ours["fusion1.stb.conv_hl.weight"][0, 0, 0, 0] == 0 + 9  # channel 0 + channel 1 of output 0
    assert torch.equal(ours["fusion1.stb.conv_hl.bias"], torch.full((2 * C,), -0.25))
    assert torch.equal(ours["fusion1.stb.conv_lh.bias"], -torch.arange(2 * C, dtype=torch.float32))
    assert torch.equal(ours["fusion1.stb.conv_ll.bias"], torch.full((2 * C,), 0.5))
    assert torch.equal(ours["encoder2.blocks.0.hmcm.rssm.norm1.weight"], torch.full((2 * C,), 3.0))
    assert torch.equal(ours["decoder1.norm.bias"], torch.full((2 * C,), -1.0))
    hm = to_released(preset("hybrimamba").state_dict(), "hybrimamba", C)
    hm["module.encoderlayer_bottom.layers.1.0.fn.layers.0.mixer.symmetry_enhance.symmetry_weight"] = torch.tensor(0.7)
    hm["module.decoderlayer_2.layers.0.1.fn.gate.1.bias"] = torch.full((8 * C,), 2.0)
    hm |= {f"module.decoderlayer_3.layers.0.0.norm.{p}": torch.zeros(2 * C) for p in ("weight", "bias")}  # unused
    ours = to_ours(hm, "hybrimamba", preset("hybrimamba"), C)
    assert ours["transformation.mambas.1.blocks.0.post_scan.weight"] == 0.7
    assert torch.equal(ours["decoder2.lems.0.gate.1.bias"], torch.full((8 * C,), 2.0))


def released_sfb(w: dict, d: torch.Tensor, e: torch.Tensor, level: int, n: int) -> torch.Tensor:
    """One released decoder fusion (SHMC.py FDBNet.forward) on NCHW maps, from its own weights and Haar convs."""
    c = e.shape[1]
    bands = [F.conv2d(e, w[f"wave_pool{2 - n}.{b}.weight"], stride=2, groups=c) for b in ("LL", "LH", "HL")]
    left, right = d.chunk(2, dim=1)
    parts = [
        F.conv2d(x, w[f"high{level}_{b}.weight"], w[f"high{level}_{b}.bias"], padding=1)
        for x, b in zip(bands, ("LL", "LH", "HL"))
    ]
    recon = sum(
        F.conv_transpose2d(x, w[f"recon_block{n}.{b}.weight"], stride=2, groups=2 * c)
        for x, b in zip([*parts, left], ("LL", "LH", "HL", "HH"))
    )
    up = F.conv_transpose2d(right, w[f"Upsample{n}.weight"], w[f"Upsample{n}.bias"], stride=2)
    return F.conv2d(torch.cat([recon, up], 1), w[f"up{n}.weight"], w[f"up{n}.bias"])


@pytest.mark.parametrize("copies", ["1", "2"])
def test_converted_fusion_computes_the_released_fusion(copies):
    """Band swap, negated biases and channel-pair folding: our SFB on converted weights = their formula."""
    ours = preset("rhmc", f"model.stb_band_copies={copies}")
    released = {k.removeprefix("module.FDBNet."): v for k, v in to_released(ours.state_dict(), "rhmc", C).items()}
    torch.manual_seed(5)
    for name, level, n, c in (("fusion1", 0, 2, C), ("fusion3", 2, 0, 4 * C)):
        d, e = torch.randn(2, 4 * c, 4, 4), torch.randn(2, c, 8, 8)
        with torch.no_grad():
            got = getattr(ours, name)(d.permute(0, 2, 3, 1), e.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        torch.testing.assert_close(got, released_sfb(released, d, e, level, n), rtol=1e-4, atol=1e-5)


def test_released_haar_filters_are_their_get_wav():
    s = 1 / math.sqrt(2)
    assert torch.allclose(haar_filter("LH"), torch.tensor([[-s * s, s * s], [-s * s, s * s]]))
    assert torch.allclose(haar_filter("HL"), torch.tensor([[-0.5, -0.5], [0.5, 0.5]]))


def test_errors_name_and_count_unknown_missing_and_changed_keys():
    released = to_released(preset("rhmc").state_dict(), "rhmc", C)
    target = preset("rhmc", seed=3)
    extra = {**released, "module.FDBNet.extra_head.weight": torch.zeros(1), "module.FDBNet.foo": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"2 unknown key\(s\) in the source: extra_head.weight, foo"):
        to_ours(extra, "rhmc", target, C)
    missing = {k: v for k, v in released.items() if not k.endswith(("high1_HL.bias", "pool0.weight"))}
    with pytest.raises(ValueError, match=r"2 released key\(s\) missing from the source: .*pool0.weight.*high1_HL.bias"):
        to_ours(missing, "rhmc", target, C)
    changed = dict(released)
    changed["module.FDBNet.wave_pool0.LH.weight"] = changed["module.FDBNet.wave_pool0.LH.weight"] * 1.5
    with pytest.raises(ValueError, match="wave_pool0.LH.weight is not the Haar filter"):
        to_ours(changed, "rhmc", target, C)
    shaped = dict(released)
    shaped["module.FDBNet.out.bias"] = torch.zeros(4)
    with pytest.raises(ValueError, match=r"1 shape mismatch\(es\): out.bias \(4,\) -> tail.0.bias \(3,\)"):
        to_ours(shaped, "rhmc", target, C)


def test_cli_forward_and_reverse_files_load_strictly(tmp_path: Path):
    model = preset("hybrimamba")
    ours_pt, released_pth, back_pt = tmp_path / "ours.pt", tmp_path / "released.pth", tmp_path / "back.pt"
    torch.save(model.state_dict(), ours_pt)
    common = ["--model", "hybrimamba", "--set", *SETS["hybrimamba"]]
    convert_released.main([*common[:2], "--src", str(ours_pt), "--out", str(released_pth), "--reverse", *common[2:]])
    convert_released.main([*common[:2], "--src", str(released_pth), "--out", str(back_pt), *common[2:]])
    state = load_checkpoint(back_pt)  # our checkpoint format: test.py --checkpoint reads it
    assert state["model_name"] == "hybrimamba" and state["config"]["data"]["value_range"] == [-1, 1]
    fresh = build_model(state["config"]["model"])
    fresh.load_state_dict(state["model"], strict=True)
    assert_same_state(fresh.state_dict(), model.state_dict())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert_released.main([*common[:2], "--src", str(tmp_path / "none.pth"), "--out", str(back_pt)])
    with pytest.raises(ValueError, match="does not fit the configured model"):  # full-width preset, tiny weights
        convert_released.main([*common[:2], "--src", str(ours_pt), "--out", str(released_pth), "--reverse"])


@pytest.mark.parametrize("copies", ["1", "2"])
def test_rhmc_preset_on_converted_weights_is_the_released_forward(copies):
    """End to end: our released preset = SHMC.py's FDBNet (rewritten in tests/helpers/released_reference.py) on the same weights."""
    sets = ["model.embed_dim=16", "model.d_state=2", f"model.stb_band_copies={copies}"]  # 16: their dim // 16 >= 1
    cfg = load_config("configs/rhmc_released.yaml", sets)
    torch.manual_seed(4)
    ours = build_model(cfg["model"]).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    released = {k.removeprefix("module.FDBNet."): v for k, v in to_released(ours.state_dict(), "rhmc", 16).items()}
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expected = released_rhmc_forward(released, x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=5e-5)  # measured 4.8e-6 (outputs up to 4.7)
        flips = dict(
            rgb_mean_shift=False, block_norm_eps=1e-5, rmoe_double_sigmoid=False, local_branch_released_view=False
        )
        for key, value in flips.items():  # each switch is needed: measured 3.4, 6.4e-4, 0.93, 1.4
            other = build_model({**cfg["model"], key: value}).eval()
            other.load_state_dict(ours.state_dict())
            assert (other(x) - expected).abs().max() > 2e-4, key


def test_hybrimamba_preset_on_converted_weights_is_the_released_forward():
    """End to end: our released preset = HibriMambaBlock (rewritten in tests/helpers/released_reference.py), same weights."""
    cfg = load_config("configs/hybrimamba_released.yaml", ["model.embed_dim=16", "model.d_state=2"])
    torch.manual_seed(6)
    ours = build_model(cfg["model"]).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    released = {k.removeprefix("module."): v for k, v in to_released(ours.state_dict(), "hybrimamba", 16).items()}
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expected = released_hybrimamba_forward(released, x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=5e-5)
        figure_view = build_model({**cfg["model"], "lem_gate_released_view": False}).eval()
        figure_view.load_state_dict(ours.state_dict())
        assert (figure_view(x) - expected).abs().max() > 2e-4


def test_reverse_hybrimamba_writes_the_unused_top_decoder_so_their_strict_load_accepts_it(tmp_path: Path):
    """Their constructor always builds decoderlayer_3 and their test.py loads strictly: the file needs its keys."""
    ours_pt, released_pth = tmp_path / "ours.pt", tmp_path / "released.pth"
    torch.save(preset("hybrimamba").state_dict(), ours_pt)
    convert_released.main(
        [
            "--model",
            "hybrimamba",
            "--src",
            str(ours_pt),
            "--out",
            str(released_pth),
            "--reverse",
            "--set",
            *SETS["hybrimamba"],
        ]
    )
    written = torch.load(released_pth, weights_only=True)
    theirs = to_released(preset("hybrimamba", "model.top_decoder=true").state_dict(), "hybrimamba", C)  # all they build
    assert {k: tuple(v.shape) for k, v in written.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    top = [k for k in written if k.startswith("module.decoderlayer_3.")]
    assert len(top) > 0
    assert_same_state(
        to_ours(written, "hybrimamba", preset("hybrimamba", seed=2), C), preset("hybrimamba").state_dict()
    )


# ------------------------------------------------------------------ DIC, SFMNet, WFEN (Table 1 baselines)
BASELINES = {  # tiny widths; the released structure otherwise (their x8 configurations)
    "dic": dict(name="dic", dim=4, n_steps=2, groups=3, hg_dim=8, keypoints=68, n_fusion=2),
    "sfmnet": dict(name="sfmnet", dim=8, n_resblocks=2, shared_fsib_attention=True),
    "wfen": dict(name="wfen", min_ch=8, res_depth=3),
}


def baseline(name: str, seed: int = 1, **changes) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model({**BASELINES[name], **changes}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def released_haar(channels: int) -> torch.Tensor:
    """WFEN's HaarWavelet.haar_weights, written from their code: ones, -1 at h (0,1),(1,1); v (1,0),(1,1); d (1,0),(0,1)."""
    w = torch.ones(4, 1, 2, 2)
    for band, cells in ((1, ((0, 1), (1, 1))), (2, ((1, 0), (1, 1))), (3, ((1, 0), (0, 1)))):
        for r, c in cells:
            w[band, 0, r, c] = -1
    return torch.cat([w] * channels)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_round_trip_ours_released_ours_is_identical(name):
    model = baseline(name)
    released = to_released(model.state_dict(), name, 0)
    assert_same_state(to_ours(released, name, baseline(name, seed=2), 0), model.state_dict())


def test_dic_released_key_names_are_the_authors():
    """Names and shapes written by hand from dic_arch.py, srfbn_arch.py, blocks.py and StackedHourGlass.py."""
    d, hg = 4, 8
    released = to_released(baseline("dic").state_dict(), "dic", 0)
    expected = {
        "conv_in.0.weight": (4 * d, 3, 3, 3),
        "conv_in.1.weight": (1,),  # PReLU
        "first_block.compress_in.0.weight": (d, d, 1, 1),  # FeedbackBlockCustom: num_features in
        "block.compress_in.0.weight": (d, 2 * d, 1, 1),
        "block.upBlocks.2.0.weight": (d, d, 12, 12),  # x8 deconv
        "block.downBlocks.0.1.weight": (1,),
        "block.uptranBlocks.1.0.weight": (d, 3 * d, 1, 1),
        "first_block.downtranBlocks.0.0.bias": (d,),
        "block.compress_out.0.weight": (d, 3 * d, 1, 1),
        "block.fusion_block.conv_in.0.weight": (5 * d, d, 1, 1),
        "block.fusion_block.resnet.1.res.2.weight": (5 * d, d, 3, 3),  # groups = 5 heatmaps
        "out.0.weight": (d, d, 8, 8),
        "conv_out.0.weight": (3, d, 3, 3),
        "HG.pre_conv_block.0.weight": (hg // 4, 3, 7, 7),
        "HG.pre_conv_block.2.skip_layer.weight": (hg // 2, hg // 4, 1, 1),
        "HG.pre_conv_block.5.conv_block.3.weight": (hg, hg // 2, 1, 1),
        "HG.compress_in.weight": (2 * hg, 2 * hg, 1, 1),
        "HG.hg.res4_1.conv_block.0.weight": (hg, 2 * hg, 1, 1),
        "HG.hg.res3_2.conv_block.2.weight": (hg, hg, 3, 3),
        "HG.hg.res1_3.conv_block.3.bias": (2 * hg,),
        "HG.hg.res_center.conv_block.0.bias": (hg,),
        "HG.hg_conv_out.0.conv_block.2.weight": (hg // 2, hg // 2, 3, 3),
        "HG.hg_conv_out.1.conv_block.0.weight": (hg, hg, 1, 1),  # Lin
        "HG.hg_conv_out.2.weight": (68, hg, 1, 1),
    }
    assert {k: tuple(released[k].shape) for k in expected} == expected
    assert not any("skip_layer" in k for k in released if k.startswith("HG.hg."))  # equal widths: no skip conv
    levels = {m.group(0) for k in released if (m := re.search(r"res\d_[123]", k))}
    assert levels == {f"res{n}_{i}" for n in range(1, 5) for i in range(1, 4)}


def test_sfmnet_released_key_names_are_the_authors():
    """Names and shapes written by hand from mynet.py (TwoBranch) and common.py."""
    c = 8
    released = to_released(baseline("sfmnet").state_dict(), "sfmnet", 0)
    expected = {
        "head.0.layers.weight": (c, 3, 3, 3),
        "head_fre.0.act.weight": (1,),
        "down1.0.layers.0.layers.weight": (c, c, 3, 3),
        "down3_fre.0.layers.2.layers.weight": (c, 4 * c, 1, 1),  # after invPixelShuffle
        "up2.0.0.bias": (4 * c,),
        "up1_fre.0.2.weight": (1,),
        "down2.1.body.1.layers.0.layers.weight": (c, c, 3, 3),
        "neck.0.body.2.layers.weight": (c, c, 3, 3),
        "neck_mo.0.body.2.act.weight": (1,),
        "up3_mo.0.re_scale.scale": (1,),
        "down1_fre_mo.0.fpre.bias": (c,),
        "neck_fre.0.amp_fuse.2.weight": (c, c, 3, 3),
        "up2_fre.1.pha_fuse.0.weight": (c, c, 3, 3),
        "neck_fre_mo.0.post.weight": (c, c, 1, 1),
        "tail_fre.0.layers.weight": (3, c, 3, 3),
        "conv_fuse.13.fuse.1.weight": (2 * c, c, 3, 3),
        "conv_fuse.5.fre_att.kv_dwconv.weight": (2 * c, 1, 3, 3),
        "conv_fuse.0.spa_att.temperature": (8, 1, 1),  # built by FuseBlock7, never called
        "conv_fuse.7.spa.bias": (c,),
    }
    assert {k: tuple(released[k].shape) for k in expected} == expected
    assert sum("spa_att" in k for k in released) == 14 * 6
    assert not any(k.startswith(("neck.1", "neck_fre.1")) for k in released)


def test_wfen_released_key_names_are_the_authors():
    """Names and shapes written by hand from models/arch/wfen.py and blocks.py."""
    c1, c2, c3 = 8, 16, 32
    released = to_released(baseline("wfen").state_dict(), "wfen", 0)
    expected = {
        "first_conv.weight": (c1, 3, 3, 3),
        "TransformerDown1.1.modules_att.att_0.qkv.weight": (3 * c1, c1, 1, 1),
        "TransformerDown2.0.modules_norm.norm_2.body.bias": (c2,),
        "TransformerDown3.0.modulec_att.att_0.qkv_dwconv.weight": (3 * c3, 1, 3, 3),
        "Transformer0.modulec_att.att_0.temperature": (1, 1, 1),
        "Transformer.1.modulec_ffd.ffd0.project_out.weight": (c3, int(c3 * 2.66), 1, 1),
        "TransformerUp1.0.modules_ffd.ffd0.project_in.weight": (2 * int(c3 * 2.66), c3, 1, 1),
        "TransformerUp3.1.modulec_norm.norm_0.body.weight": (c1,),
        "HaarDownsample2.first_conv.weight": (c3, c2, 1, 1),
        "HaarDownsample3.HaarWavelet.haar_weights": (4 * c3, 1, 2, 2),
        "HaarFeatureFusion2.InverseHaarWavelet.haar_weights": (4 * c2, 1, 2, 2),
        "HaarFeatureFusion3.channel_tranformation.2.weight": (3 * c1, c1 + c2, 1, 1),
        "HaarFeatureFusion1.RB.0.weight": (c3, c3, 3, 3),
        "RB3.2.bias": (c3,),
        "out_conv.bias": (3,),
    }
    assert {k: tuple(released[k].shape) for k in expected} == expected
    assert not any(k.startswith("Transformer.2.") for k in released)  # res_depth 3: Transformer0 + 2
    assert torch.equal(released["HaarFeatureFusion2.HaarWavelet.haar_weights"], released_haar(c2))
    assert torch.equal(released["HaarDownsample1.HaarWavelet.haar_weights"], released_haar(c2))


def test_baseline_hand_built_released_entries_land_where_expected():
    dic = to_released(baseline("dic").state_dict(), "dic", 0)
    dic["HG.hg.res_center.conv_block.2.bias"] = torch.full((8,), 3.0)  # 2 * hg_dim wide, mid 8
    dic["block.fusion_block.resnet.1.res.0.bias"] = torch.arange(20, dtype=torch.float32)
    ours = to_ours(dic, "dic", baseline("dic"), 0)
    assert torch.equal(ours["hg.hourglass.inner.inner.inner.inner.body.2.bias"], torch.full((8,), 3.0))
    assert torch.equal(ours["block.fusion.blocks.1.0.bias"], torch.arange(20, dtype=torch.float32))
    sfm = to_released(baseline("sfmnet").state_dict(), "sfmnet", 0)
    sfm["up1_mo.0.re_scale.scale"] = torch.tensor([0.25])  # level 4 (up1), second stage: stages.9
    sfm["neck_fre.0.post.bias"] = torch.full((8,), -2.0)  # level 3 main: stages.6
    sfm["conv_fuse.3.fuse.0.bias"] = torch.full((8,), 5.0)
    ours = to_ours(sfm, "sfmnet", baseline("sfmnet"), 0)
    assert ours["spa_branch.stages.9.skip_scale"] == 0.25
    assert torch.equal(ours["fre_branch.stages.6.post.bias"], torch.full((8,), -2.0))
    assert torch.equal(ours["fsib.3.gate.0.bias"], torch.full((8,), 5.0))
    wf = to_released(baseline("wfen").state_dict(), "wfen", 0)
    wf["Transformer.0.modules_norm.norm_2.body.weight"] = torch.full((32,), 7.0)
    ours = to_ours(wf, "wfen", baseline("wfen"), 0)
    assert torch.equal(ours["body.1.local.norm2.weight"], torch.full((32,), 7.0))


def test_baseline_errors_name_unknown_missing_and_changed_keys():
    dic = to_released(baseline("dic").state_dict(), "dic", 0)
    extra = {**dic, "HG.hg.res5_1.conv_block.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"1 unknown key\(s\) in the source: HG.hg.res5_1.conv_block.0.weight"):
        to_ours(extra, "dic", baseline("dic"), 0)
    missing = {k: v for k, v in dic.items() if k != "conv_out.0.bias"}
    with pytest.raises(ValueError, match=r"1 released key\(s\) missing from the source: conv_out.0.bias"):
        to_ours(missing, "dic", baseline("dic"), 0)
    wf = to_released(baseline("wfen").state_dict(), "wfen", 0)
    wf["HaarDownsample2.HaarWavelet.haar_weights"] = wf["HaarDownsample2.HaarWavelet.haar_weights"] * 2
    with pytest.raises(ValueError, match="HaarDownsample2.HaarWavelet.haar_weights differs"):
        to_ours(wf, "wfen", baseline("wfen"), 0)
    wf = to_released(baseline("wfen").state_dict(), "wfen", 0)
    del wf["Transformer.1.modulec_att.att_0.temperature"]
    with pytest.raises(
        ValueError, match=r"1 released key\(s\) missing .*: Transformer.1.modulec_att.att_0.temperature"
    ):
        to_ours(wf, "wfen", baseline("wfen"), 0)
    sfm = to_released(baseline("sfmnet").state_dict(), "sfmnet", 0)
    odd = {**sfm, "conv_fuse.14.spa_att.temperature": torch.ones(8, 1, 1), "neck.1.re_scale.scale": torch.ones(1)}
    with pytest.raises(ValueError, match=r"2 unknown key\(s\) .*: conv_fuse.14.spa_att.temperature, neck.1.re_scale"):
        to_ours(odd, "sfmnet", baseline("sfmnet"), 0)
    with pytest.raises(ValueError, match="shared_fsib_attention=true"):
        to_ours(sfm, "sfmnet", baseline("sfmnet", shared_fsib_attention=False), 0)
    with pytest.raises(ValueError, match="shared_fsib_attention=true"):
        to_released(baseline("sfmnet", shared_fsib_attention=False).state_dict(), "sfmnet", 0)


def test_cli_reads_dic_checkpoints_and_defaults_sfmnet_to_the_released_attention(tmp_path: Path):
    model = baseline("dic")
    released, out = tmp_path / "best_ckp.pth", tmp_path / "ours.pt"
    torch.save({"step": 1, "state_dict": to_released(model.state_dict(), "dic", 0)}, released)  # their solver's
    sets = ["model.dim=4", "model.n_steps=2", "model.groups=3", "model.hg_dim=8", "model.n_fusion=2"]
    convert_released.main(["--model", "dic", "--src", str(released), "--out", str(out), "--set", *sets])
    state = load_checkpoint(out)
    assert state["config"]["model"]["name"] == "dic"
    assert_same_state(state["model"], model.state_dict())
    sfm = baseline("sfmnet")
    torch.save(to_released(sfm.state_dict(), "sfmnet", 0), released)
    convert_released.main(["--model", "sfmnet", "--src", str(released), "--out", str(out), "--set", "model.dim=8"])
    state = load_checkpoint(out)
    assert state["config"]["model"]["shared_fsib_attention"] is True
    assert_same_state(state["model"], sfm.state_dict())
