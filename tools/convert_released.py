"""Convert a state dict of the authors' released networks into this framework's released presets, and back.

    python -m tools.convert_released --model hybrimamba|rhmc|sparnet|swinir|mambair|dic|sfmnet|wfen
                                     --src RELEASED.pth --out OURS.pt
                                     [--config YAML] [--set model.k=v ...] [--reverse]

Forward: RELEASED.pth (their ``torch.save(generator.state_dict())``, with or without the
``module.`` / ``FDBNet.`` prefixes of their DataParallel / two_stageHMC wrappers) -> OURS.pt, a
checkpoint that ``test.py --checkpoint`` reads, for the model of ``--config`` (default
``configs/<model>_released.yaml``). ``--reverse``: OURS.pt (a checkpoint or a plain state dict) ->
RELEASED.pth with the full prefixes their test scripts load.

Key names are those of the released modules (LateAutu/HybriMamba models/HibriMambaBlock.py and
models/mamba.py; RHMC-Project/RHMC model/HMC/SHMC.py). Besides renaming:
- RHMC wavelet bands: their ``LH`` filter is low-pass along H and high-pass along W, our ``HL``
  (pywt's cV), with the opposite sign, and their ``HL`` is minus our ``LH``; their analysis and synthesis
  filters are the same, so ``high*_LH`` -> ``conv_hl`` and ``high*_HL`` -> ``conv_lh`` with negated biases.
- RHMC STB convs: their wavelet pooling writes every band twice (channels 2i and 2i+1 both from
  channel i); for ``stb_band_copies: 1`` the input channel pairs are summed, exact because the two
  copies are equal: the converter checks that their fixed Haar filter weights are unchanged.
- RHMC FAM: the release does not define its FAM class; ours with identity ECA kernels is their FIM
  class (``FAMblk.pos_enc1``, ``conv_spatial1_1`` ...), so the ECA kernels are written as identities.
- HybriMamba ``decoderlayer_*3*``: built but never called by their forward; dropped for
  ``top_decoder: false``. The reverse output writes it anyway (initialised by our constructor of that
  stage under ``torch.manual_seed(0)``; never called, so no output depends on it), so their test.py's
  strict ``load_state_dict`` accepts the file.
- RHMC on CPU: a freshly built released ``FDBNet`` cannot load any state dict before ``.cuda()``: its
  fixed Haar filters are stride-0 ``expand`` views ("more than one element of the written-to tensor
  refers to a single memory location"). Load with ``load_state_dict(state, assign=True)`` (torch >= 2.1;
  the tensors of the file replace the views), or ``.cuda()`` first as the authors do.
- Table 1 baselines (``configs/table1/<model>.yaml``): SPARNet, SwinIR, MambaIR by name (SwinIR's stored
  attention masks / index buffers are rebuilt); DIC (Maclory/Deep-Iterative-Collaboration, ``{"state_dict": ...}``
  or DICGAN's ``{"netG": ...}``) one to one, same shapes; SFMNet (wcy-cs/SFMNet, bare) only onto
  ``shared_fsib_attention: true`` (the CLI sets it): their FuseBlock7 builds ``spa_att`` and never calls it, so
  it is dropped, and ``--reverse`` writes a copy of ``fre_att`` there for their strict load; WFEN (PRIS-CV/WFEN,
  bare ``wfen_best.pth``) without its fixed ``haar_weights`` (checked equal to our Haar filters; written back).
Unknown or missing keys and shape mismatches are errors that name and count them.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model import build_model
from model.wfen import Haar
from utils.checkpoint import load_reason, safe_load, save_checkpoint
from utils.cli import ArgumentParser, run_cli
from utils.config import load_config

MODELS = ("hybrimamba", "rhmc", "sparnet", "swinir", "mambair", "dic", "sfmnet", "wfen")
PREFIXES = {"hybrimamba": ("module.",), "rhmc": ("module.", "FDBNet.")}
PREFIXES |= {m: () for m in MODELS[2:]}  # saved unwrapped (net.module / BasicSR's bare_model / model.state_dict())
FIXED = "<fixed>"  # our key has no released tensor: a constant filter buffer or an identity ECA kernel
SHOWN = 12

# ------------------------------------------------------------------ HybriMamba names
HM_STAGES = {
    "encoder0": "encoderlayer_0",
    "encoder1": "encoderlayer_1",
    "encoder2": "encoderlayer_2",
    "transformation": "encoderlayer_bottom",
    "decoder1": "decoderlayer_1",
    "decoder2": "decoderlayer_2",
    "decoder3": "decoderlayer_3",
}
HM_TOP = {
    "head": "shallow_conv",
    "tail": "out",
    "down0.depthwise": "pool0.conv.op.0",
    "down0.pointwise": "pool0.conv.op.1",
    "down1.depthwise": "pool1.conv.op.0",
    "down1.pointwise": "pool1.conv.op.1",
    "up1.depthwise": "Upsample1.deconv.op.0",
    "up1.pointwise": "Upsample1.deconv.op.1",
    "up2.depthwise": "Upsample2.deconv.op.0",
    "up2.pointwise": "Upsample2.deconv.op.1",
}
MIXER = r"layers.\1.0.fn.layers.\2.mixer."  # their Mamba layer j of HibriMamba layer i
SCAN_PARAMS = r"(?:in_proj|conv2d|out_norm|out_proj)\.\w+|x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds"
HM_STAGE_RULES = [  # inside a stage: (our pattern, released template)
    (r"mamba_norms\.(\d+)\.(.+)", r"layers.\1.0.norm.\2"),
    (r"mambas\.(\d+)\.norms\.(\d+)\.weight", r"layers.\1.0.fn.layers.\2.norm.weight"),
    (r"mambas\.(\d+)\.blocks\.(\d+)\.pre_conv\.magnitude\.(\d)\.(.+)", MIXER + r"freq_model.fft_conv.\3.\4"),
    (r"mambas\.(\d+)\.blocks\.(\d+)\.pre_conv\.dwt\.dwt\.(.+)", MIXER + r"freq_model.dwt.\3"),
    (r"mambas\.(\d+)\.blocks\.(\d+)\.pre_conv\.idwt\.idwt\.(.+)", MIXER + r"freq_model.idwt.\3"),
    (r"mambas\.(\d+)\.blocks\.(\d+)\.pre_conv\.high_conv\.(.+)", MIXER + r"freq_model.wave_conv.\3"),
    (r"mambas\.(\d+)\.blocks\.(\d+)\.post_scan\.weight", MIXER + r"symmetry_enhance.symmetry_weight"),
    (rf"mambas\.(\d+)\.blocks\.(\d+)\.({SCAN_PARAMS})", MIXER + r"\3"),
    (r"lem_norms\.(\d+)\.(.+)", r"layers.\1.1.norm.\2"),
    (r"lems\.(\d+)\.expand\.(.+)", r"layers.\1.1.fn.expand.\2"),
    (r"lems\.(\d+)\.dwconv\.(.+)", r"layers.\1.1.fn.ca.0.\2"),
    (r"lems\.(\d+)\.attention\.squeeze\.(\d)\.(.+)", r"layers.\1.1.fn.ca.1.att.\2.\3"),
    (r"lems\.(\d+)\.gate\.(\d)\.(.+)", r"layers.\1.1.fn.gate.\2.\3"),
    (r"lems\.(\d+)\.proj\.(.+)", r"layers.\1.1.fn.smooth.\2"),
]

# ------------------------------------------------------------------ RHMC names
RH_STAGES = {
    "encoder1": "encoderlayer_0",
    "encoder2": "encoderlayer_1",
    "encoder3": "encoderlayer_2",
    "encoder4": "encoderlayer_3",
    "aggregation": "encoderlayer_bottom",
    "decoder4": "decoderlayer_0",
    "decoder3": "decoderlayer_1",
    "decoder2": "decoderlayer_2",
    "decoder1": "decoderlayer_3",
}
RH_TOP = {"head.0": "shallow_conv", "tail.0": "out", "down1": "pool0", "down2": "pool1", "down3": "pool2"}
RH_FUSION = {"fusion3": (2, 0), "fusion2": (1, 1), "fusion1": (0, 2)}  # (high<level>_*, Upsample<n> / up<n>)
RH_BAND = {"conv_ll": "LL", "conv_lh": "HL", "conv_hl": "LH"}  # ours -> theirs: LH and HL swapped (and negated)
RH_BLOCK_RULES = [  # inside an HMCB (their single shared ``HMCB``)
    (r"scale([12])", r"skip_scale\1"),
    (r"norm([12])\.(.+)", r"ln_\1.\2"),
    (r"hmcm\.project_out\.(.+)", r"proj.\1"),
    (r"ffn\.fc([12])\.(.+)", r"convffn.conv\1.\2"),
    (r"hmcm\.local\.(\d)\.(.+)", r"dwconv.\1.\2"),
    (r"hmcm\.rmoe\.expert2\.conv\.weight", r"channel_interaction.conv.weight"),
    (r"hmcm\.rmoe\.expert1\.(\d)\.(.+)", r"spatial_interaction.\1.\2"),
    (r"hmcm\.rssm\.norm([12])\.(.+)", r"mamba_b.ln_\1.\2"),
    (r"hmcm\.rssm\.scale1", r"mamba_b.skip_scale"),
    (r"hmcm\.rssm\.scale2", r"mamba_b.skip_scale2"),
    (r"hmcm\.rssm\.vssm\.(.+)", r"mamba_b.self_attention.\1"),
    (r"hmcm\.rssm\.fam\.channel_gate\.(\d)\.(.+)", r"mamba_b.ACG.gate.\1.\2"),
    (r"hmcm\.rssm\.fam\.dw_a\.(.+)", r"mamba_b.FAMblk.pos_enc1.\1"),
    (r"hmcm\.rssm\.fam\.pw_a([12])\.(.+)", r"mamba_b.FAMblk.conv_spatial1_\1.\2"),
    (r"hmcm\.rssm\.fam\.pw_b([12])\.(.+)", r"mamba_b.FAMblk.conv_spatial2_\1.\2"),
    (r"hmcm\.rssm\.fam\.dw_b\.(.+)", r"mamba_b.FAMblk.pos_enc2.\1"),
    (r"hmcm\.rssm\.fam\.eca_[ab]\.conv\.weight", FIXED),
]
RH_WAVELET_KEY = re.compile(r"(wave_pool|recon_block)([012])\.(LL|LH|HL|HH)\.weight")


# ------------------------------------------------------------------ Table 1 baselines (bench.table1)
# SPARNet: chaofengc/Face-SPARNet models/sparnet.py + blocks.py (released x8 CelebA weights, GitHub release v0.1.0).
# Our ConvLayer (conv, norm) is their ConvLayer (conv2d, NormLayer.norm); their hourglass names its convs by
# level, depth .. 1: our skips[i] / downs[i] / ups[i] are their b1_ / b2_ / b3_<depth - i>, bottom is b2_plus_1.
SP_TOP = {"encoder": "encoder", "body": "res_layers", "decoder": "decoder"}
SP_CONV = [(r"(.*)\.conv\.(weight|bias)", r"\1.conv2d.\2"), (r"(.*)\.norm\.(.+)", r"\1.norm.norm.\2")]
SP_FAU = [
    (r"shortcut\.(.+)", r"shortcut_func.\1"),
    (r"preact\.0\.(.+)", r"preact_func.0.norm.\1"),
    (r"(conv[12]\..+)", r"\1"),
    (r"attention\.out\.0\.(.+)", r"att_func.out_block.0.\1"),
    (r"attention\.bottom\.(.+)", r"att_func.b2_plus_1.\1"),
]
SP_HOURGLASS = {"skips": "b1_", "downs": "b2_", "ups": "b3_"}
# SwinIR (JingyunLiang/SwinIR models/network_swinir.py) and MambaIR (csguoh/MambaIR basicsr/archs/mambair_arch.py):
# the same top level (their SwinIR-style reconstruction: conv_before_upsample, upsample, conv_last).
SR_TOP = [
    (r"patch_norm\.(.+)", r"patch_embed.norm.\1"),
    (r"reconstruction\.0\.0\.(.+)", r"conv_before_upsample.0.\1"),
    (r"reconstruction\.1\.(\d+)\.(.+)", r"upsample.\1.\2"),
    (r"reconstruction\.2\.(.+)", r"conv_last.\1"),
    (r"((?:conv_first|conv_after_body|norm)\..+|layers\.\d+\.conv\..+)", r"\1"),
]
SWINIR_RULES = [
    *SR_TOP,
    (r"layers\.(\d+)\.layers\.(\d+)\.mlp\.0\.(.+)", r"layers.\1.residual_group.blocks.\2.mlp.fc1.\3"),
    (r"layers\.(\d+)\.layers\.(\d+)\.mlp\.2\.(.+)", r"layers.\1.residual_group.blocks.\2.mlp.fc2.\3"),
    (r"layers\.(\d+)\.layers\.(\d+)\.(.+)", r"layers.\1.residual_group.blocks.\2.\3"),
]
MAMBAIR_RULES = [
    *SR_TOP,
    (r"layers\.(\d+)\.blocks\.(\d+)\.vssm\.(.+)", r"layers.\1.residual_group.blocks.\2.self_attention.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.cab\.(.+)", r"layers.\1.residual_group.blocks.\2.conv_blk.\3"),
    (r"layers\.(\d+)\.blocks\.(\d+)\.(.+)", r"layers.\1.residual_group.blocks.\2.\3"),
]
TABLE1_RULES = {"swinir": SWINIR_RULES, "mambair": MAMBAIR_RULES}
SWINIR_BUFFERS = re.compile(r".*\.attn\.relative_position_index|.*\.attn_mask")  # theirs persist; ours are rebuilt
TABLE1_CONFIG = "configs/table1/{}.yaml"

# DIC (Maclory/Deep-Iterative-Collaboration code/networks: dic_arch.py, srfbn_arch.py, srfbn_hg_arch.py, blocks.py,
# modules/StackedHourGlass.py). Their ConvBlock / DeconvBlock are Sequential(conv, act) as ours; an act-less
# ConvBlock is Sequential(conv) (conv_out.0); ResBlock flattens to res = (conv, lrelu, conv).
DIC_BLOCK = [  # inside first_block / block (their FeedbackBlockCustom / FeedbackBlockHeatmapAttention)
    (r"(compress_in|compress_out)\.(.+)", r"\1.\2"),
    (r"up\.(\d+)\.(.+)", r"upBlocks.\1.\2"),
    (r"down\.(\d+)\.(.+)", r"downBlocks.\1.\2"),
    (r"up_tran\.(\d+)\.(.+)", r"uptranBlocks.\1.\2"),
    (r"down_tran\.(\d+)\.(.+)", r"downtranBlocks.\1.\2"),
    (r"fusion\.conv_in\.(.+)", r"fusion_block.conv_in.\1"),
    (r"fusion\.blocks\.(\d+)\.([02])\.(.+)", r"fusion_block.resnet.\1.res.\2.\3"),
]
DIC_RESIDUAL = [(r"body\.(\d)\.(.+)", r"conv_block.\1.\2"), (r"skip\.(.+)", r"skip_layer.\1")]
DIC_HG_TOP = [  # their FeedbackHourGlass: (our part, their part, the rest is a ResidualBlock's)
    (r"stem\.([245])\.(.+)", r"pre_conv_block.\1.", True),
    (r"stem\.0\.(.+)", r"pre_conv_block.0.", False),
    (r"compress_in\.(.+)", r"compress_in.", False),
    (r"head\.0\.(.+)", r"hg_conv_out.0.", True),
    (r"head\.1\.(.+)", r"hg_conv_out.1.conv_block.0.", False),
    (r"head\.3\.(.+)", r"hg_conv_out.2.", False),
]
DIC_HG_DEPTH = 4  # their HourGlass(4, ...): res{n}_1 / _2 / _3 per level n = 4 .. 1, res_center innermost
DIC_HG_ROLE = {"skip": 1, "down": 2, "up": 3}


def dic_name(key: str) -> str | None:
    """Released DIC name of our ``key`` (None: not convertible)."""
    head, _, rest = key.partition(".")
    if head in ("first_block", "block"):
        inner = _apply(DIC_BLOCK, rest)
        return None if inner is None else f"{head}.{inner}"
    if head in ("conv_in", "out"):
        return key
    if key in ("conv_out.weight", "conv_out.bias"):
        return "conv_out.0." + key.split(".")[-1]
    if head != "hg":
        return None
    match = re.fullmatch(r"hourglass\.((?:inner\.)*)(?:(skip|down|up)\.)?(.+)", rest)
    if match:
        level = DIC_HG_DEPTH - match.group(1).count("inner.")
        if match.group(2) is None and level == 0:
            part, tail = "res_center.", match.group(3)
        elif match.group(2) is not None and level >= 1:
            part, tail = f"res{level}_{DIC_HG_ROLE[match.group(2)]}.", match.group(3)
        else:
            return None
        inner = _apply(DIC_RESIDUAL, tail)
        return None if inner is None else f"HG.hg.{part}{inner}"
    for pattern, part, residual in DIC_HG_TOP:
        match = re.fullmatch(pattern, rest)
        if match:
            tail = match.group(match.lastindex)
            inner = _apply(DIC_RESIDUAL, tail) if residual else tail
            return None if inner is None else f"HG.{match.expand(part)}{inner}"
    return None


# SFMNet (wcy-cs/SFMNet model/mynet.py TwoBranch, models/common.py). Seven levels per branch; the spatial
# branch's modules are head, down1, down1_mo, ..., neck, neck_mo, up1, ..., tail; the frequency branch's the same
# with "_fre" before "_mo". A level's module holds (resize, stage) as .0 / .1, the neck's and "_mo" ones (stage).
# ConvBNReLU2D names its conv "layers" and its PReLU "act".
SFM_LEVELS = ("down1", "down2", "down3", "neck", "up1", "up2", "up3")
SFM_FRE = [
    (r"pre\.(.+)", r"fpre.\1"),
    (r"amp\.(.+)", r"amp_fuse.\1"),
    (r"pha\.(.+)", r"pha_fuse.\1"),
    (r"post\.(.+)", r"post.\1"),
]
SFM_FSIB = [
    (r"(fre|spa)\.(weight|bias)", r"\1.\2"),
    (r"fre_att\.(.+)", r"fre_att.\1"),
    (r"gate\.([01])\.(.+)", r"fuse.\1.\2"),
]
SFM_ATTENTION = re.compile(r"conv_fuse\.(\d+)\.spa_att\.(.+)")  # built, never called by their FuseBlock7


def sfmnet_names(keys: list[str]) -> dict[str, str | None]:
    """Released SFMNet names of our keys; the residual groups' depth (``n_resblocks``) read from ``keys``."""
    blocks = 1 + max((int(m.group(1)) for k in keys if (m := re.search(r"\.body\.(\d+)\.conv1\.", k))), default=-1)
    out: dict[str, str | None] = {}
    for key in keys:
        out[key] = None
        match = re.fullmatch(r"(spa|fre)_branch\.(.+)", key)
        if key.startswith("fsib."):
            _, i, rest = key.split(".", 2)
            inner = _apply(SFM_FSIB, rest)
            out[key] = None if inner is None else f"conv_fuse.{i}.{inner}"
        if match is None:
            continue
        fre, rest = "_fre" if match.group(1) == "fre" else "", match.group(2)
        part = re.fullmatch(r"(head|tail)\.([01])\.weight", rest)
        if part:
            out[key] = f"{part.group(1)}{fre}.0.{'layers' if part.group(2) == '0' else 'act'}.weight"
        elif part := re.fullmatch(r"down\.(\d)\.(conv|reduce)\.weight", rest):
            index = 0 if part.group(2) == "conv" else 2
            out[key] = f"down{int(part.group(1)) + 1}{fre}.0.layers.{index}.layers.weight"
        elif part := re.fullmatch(r"up\.(\d)\.([02]\.\w+)", rest):
            out[key] = f"up{int(part.group(1)) + 1}{fre}.0.{part.group(2)}"
        elif part := re.fullmatch(r"stages\.(\d+)\.(.+)", rest):
            level, second = divmod(int(part.group(1)), 2)
            name = SFM_LEVELS[level]
            module = f"{name}{fre}_mo.0" if second else f"{name}{fre}.{0 if name == 'neck' else 1}"
            inner = _apply(SFM_FRE, part.group(2)) if fre else sfmnet_group_name(part.group(2), blocks)
            out[key] = None if inner is None else f"{module}.{inner}"
    return out


def sfmnet_group_name(rest: str, blocks: int) -> str | None:
    """Released name inside a ResidualGroup (``blocks`` ResBlocks, then ConvBNReLU2D(conv, PReLU), re_scale)."""
    if rest == "skip_scale":
        return "re_scale.scale"
    if match := re.fullmatch(r"body\.(\d+)\.conv([12])\.weight", rest):
        return f"body.{match.group(1)}.layers.{int(match.group(2)) - 1}.layers.weight"
    if rest == f"body.{blocks}.weight":
        return f"body.{blocks}.layers.weight"
    if rest == f"body.{blocks + 1}.weight":
        return f"body.{blocks}.act.weight"
    return None


# WFEN (PRIS-CV/WFEN models/arch/wfen.py, blocks.py). Their FDT holds one local half (modules_*) and one global
# half (modulec_*) as ModuleDicts (shared_depth 1); single-FDT stages are Sequentials of one.
WF_STAGES = [
    (r"down1\.([01])\.(.+)", r"TransformerDown1.\1."),
    (r"down([23])\.(.+)", r"TransformerDown\1.0."),
    (r"body\.0\.(.+)", r"Transformer0."),
    (r"up([12])\.(.+)", r"TransformerUp\1.0."),
    (r"up3\.([01])\.(.+)", r"TransformerUp3.\1."),
]
WF_HALF = {"local": "modules", "glob": "modulec"}
WF_FDT = [
    (r"attn\.(.+)", r"_att.att_0.\1"),
    (r"norm1\.(.+)", r"_norm.norm_0.body.\1"),
    (r"norm2\.(.+)", r"_norm.norm_2.body.\1"),
    (r"ffn\.(.+)", r"_ffd.ffd0.\1"),
]
WF_TOP = [
    (r"((?:first_conv|out_conv)\..+)", r"\1"),
    (r"wfd([123])\.first_conv\.(.+)", r"HaarDownsample\1.first_conv.\2"),
    (r"high([123])\.(.+)", r"RB\1.\2"),
    (r"wfu([123])\.high\.(.+)", r"HaarFeatureFusion\1.RB.\2"),
    (r"wfu([123])\.fuse\.(.+)", r"HaarFeatureFusion\1.channel_tranformation.\2"),
]


def wfen_name(key: str) -> str | None:
    """Released WFEN name of our ``key`` (None: not convertible)."""
    top = _apply(WF_TOP, key)
    if top is not None:
        return top
    match = re.fullmatch(r"body\.(\d+)\.(.+)", key)
    if match and match.group(1) != "0":
        stage, rest = f"Transformer.{int(match.group(1)) - 1}.", match.group(2)
    else:
        for pattern, template in WF_STAGES:
            if match := re.fullmatch(pattern, key):
                stage, rest = match.expand(template), match.group(match.lastindex)
                break
        else:
            return None
    half, _, inner = rest.partition(".")
    inner = _apply(WF_FDT, inner) if half in WF_HALF else None
    return None if inner is None else f"{stage}{WF_HALF[half]}{inner}"


def wfen_haar(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The released fixed Haar filters (their HaarWavelet's ``haar_weights``, an nn.Parameter with
    requires_grad False) of the WFEN whose state dict is ``ours``: (4C, 1, 2, 2), our Haar filters."""
    out = {}
    for n in "123":
        down, fusion = ours[f"wfd{n}.first_conv.weight"].shape[0], ours[f"wfu{n}.high.0.weight"].shape[0]
        out[f"HaarDownsample{n}.HaarWavelet.haar_weights"] = Haar(down).filters.clone()
        for wrapper in ("HaarWavelet", "InverseHaarWavelet"):
            out[f"HaarFeatureFusion{n}.{wrapper}.haar_weights"] = Haar(fusion).filters.clone()
    return out


def sparnet_names(keys: list[str]) -> dict[str, str | None]:
    """Released SPARNet names of our keys (None: not convertible); hourglass depths read from ``keys``."""
    depth: dict[str, int] = {}
    for key in keys:
        match = re.match(r"(.+)\.attention\.skips\.(\d+)\.", key)
        if match:
            depth[match.group(1)] = max(depth.get(match.group(1), 0), int(match.group(2)) + 1)
    out: dict[str, str | None] = {}
    for key in keys:
        match = re.fullmatch(r"(encoder|body|decoder)\.(\d+)\.(.+)", key)
        if key.startswith("tail."):
            name = "out_conv." + key[5:]
        elif match is None:
            name = None
        elif match.group(1) == "encoder" and match.group(2) == "0":
            name = "encoder.0." + match.group(3)
        else:
            block, rest = f"{match.group(1)}.{match.group(2)}", match.group(3)
            hourglass = re.fullmatch(r"attention\.(skips|downs|ups)\.(\d+)\.(.+)", rest)
            if hourglass:
                level = depth[block] - int(hourglass.group(2))
                inner = f"att_func.{SP_HOURGLASS[hourglass.group(1)]}{level}.{hourglass.group(3)}"
            else:
                inner = _apply(SP_FAU, rest)
            name = None if inner is None else f"{SP_TOP[match.group(1)]}.{match.group(2)}.{inner}"
        out[key] = name if name is None or ".preact_func." in name else (_apply(SP_CONV, name) or name)
    return out


def released_names(model: str, keys: list[str]) -> dict[str, str | None]:
    """``released_name`` of every key (SPARNet's hourglass levels need all of its keys at once)."""
    if model == "sparnet":
        return sparnet_names(keys)
    if model in TABLE1_RULES:
        return {key: _apply(TABLE1_RULES[model], key) for key in keys}
    if model == "sfmnet":
        return sfmnet_names(keys)
    if model in ("dic", "wfen"):
        return {key: (dic_name if model == "dic" else wfen_name)(key) for key in keys}
    return {key: released_name(model, key) for key in keys}


def unwrap_released(state: dict[str, Any]) -> dict[str, Any]:
    """BasicSR / KAIR checkpoints (SwinIR, MambaIR) hold the weights under ``params`` (or ``params_ema``),
    DIC's under ``state_dict`` (DICGAN's generator under ``netG``, as their solver reads it)."""
    for key in ("params", "params_ema", "state_dict", "netG"):
        if key in state and isinstance(state[key], dict):
            return state[key]
    return state


def _apply(rules: list[tuple[str, str]], key: str) -> str | None:
    for pattern, template in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return FIXED if template == FIXED else match.expand(template)
    return None


def released_name(model: str, key: str) -> str | None:
    """The released key of our ``key``, ``FIXED`` when it has none by design, None when it is not convertible."""
    head, _, rest = key.partition(".")
    if model == "hybrimamba":
        for ours, theirs in HM_TOP.items():
            if key.startswith(ours + "."):
                return theirs + key[len(ours) :]
        if head in HM_STAGES:
            inner = _apply(HM_STAGE_RULES, rest)
            return None if inner is None else f"{HM_STAGES[head]}.{inner}"
        return None
    for ours, theirs in RH_TOP.items():
        if key.startswith(ours + "."):
            return theirs + key[len(ours) :]
    if head in RH_STAGES:
        if rest.startswith("norm."):
            return f"{RH_STAGES[head]}.{rest}"
        match = re.fullmatch(r"blocks\.\d+\.(.+)", rest)
        inner = _apply(RH_BLOCK_RULES, match.group(1)) if match else None
        return inner if inner in (None, FIXED) else f"{RH_STAGES[head]}.HMCB.{inner}"
    if head in RH_FUSION:
        level, n = RH_FUSION[head]
        if rest.startswith(("stb.dwt.dwt.", "idwt.idwt.")):
            return FIXED
        if rest.startswith("up."):
            return f"Upsample{n}.{rest[3:]}"
        if rest.startswith("fuse."):
            return f"up{n}.{rest[5:]}"
        match = re.fullmatch(r"stb\.(conv_ll|conv_lh|conv_hl)\.(weight|bias)", rest)
        if match:
            return f"high{level}_{RH_BAND[match.group(1)]}.{match.group(2)}"
    return None


def _negated(key: str) -> bool:
    """RHMC's swapped high bands carry the opposite sign: their conv biases are negated."""
    return re.search(r"\.stb\.conv_(lh|hl)\.bias$", key) is not None


def haar_filter(band: str) -> torch.Tensor:
    """The released code's 2x2 Haar filter of ``band``: outer product of L = [1, 1]/sqrt2 and H = [-1, 1]/sqrt2."""
    low = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    high = torch.tensor([-1.0, 1.0]) / math.sqrt(2)
    rows, cols = (low if band[0] == "L" else high), (low if band[1] == "L" else high)
    return rows[:, None] * cols[None, :]


def released_wavelet_weights(embed_dim: int) -> dict[str, torch.Tensor]:
    """The fixed (``requires_grad=False``) weights of their WavePool(c, 2c, 4c) and WaveUnpool(8c, 4c, 2c)."""
    out = {}
    for i in range(3):
        pool, unpool = embed_dim * 2**i, embed_dim * 2 ** (3 - i)
        for band in ("LL", "LH", "HL", "HH"):
            out[f"wave_pool{i}.{band}.weight"] = haar_filter(band).expand(2 * pool, 1, 2, 2).clone()
            out[f"recon_block{i}.{band}.weight"] = haar_filter(band).expand(unpool, 1, 2, 2).clone()
    return out


def identity_eca(ref: torch.Tensor) -> torch.Tensor:
    """An ECA Conv1d kernel (1, 1, k) that passes each channel's mean through: sigmoid(GAP), their FIM gate."""
    kernel = torch.zeros_like(ref)
    kernel[..., ref.shape[-1] // 2] = 1
    return kernel


def strip_prefixes(state: dict[str, Any], model: str) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        for prefix in PREFIXES[model]:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _listing(keys: list[str]) -> str:
    more = f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def to_ours(released: dict[str, Any], model: str, target: nn.Module, embed_dim: int) -> dict[str, torch.Tensor]:
    """Released state dict -> a state dict that ``target`` (our model, built from the preset) loads strictly."""
    _check_sfmnet_preset(model, target.state_dict())
    src = strip_prefixes(released, model)
    bad = sorted(k for k, v in src.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{len(bad)} entr(ies) of the source are not tensors (not a state dict?): {_listing(bad)}")
    out, used, missing, shapes, unmapped = {}, set(), [], [], []
    names = released_names(model, list(target.state_dict()))
    for key, ref in target.state_dict().items():
        name = names[key]
        if name is None:
            unmapped.append(key)
        elif name == FIXED:
            out[key] = identity_eca(ref) if ".eca_" in key else ref.clone()
        elif name not in src:
            missing.append(name)
        else:
            value = src[name]
            used.add(name)
            if value.dim() == 4 and ref.dim() == 4 and value.shape[1] == 2 * ref.shape[1] and ".stb.conv_" in key:
                value = value[:, 0::2] + value[:, 1::2]  # both inputs of a pair are the same band channel
            if value.shape != ref.shape:
                shapes.append(f"{name} {tuple(value.shape)} -> {key} {tuple(ref.shape)}")
                continue
            if "dwt." in name and not torch.allclose(value.to(ref.dtype), ref):
                raise ValueError(f"fixed wavelet filter {name} differs from the Haar filter our {key} holds")
            out[key] = (-value if _negated(key) else value).to(ref.dtype).clone()
    extra = _released_extras(model, src, used=used, embed_dim=embed_dim, ours=target.state_dict())
    unknown = sorted(set(src) - used - set(extra))
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} key(s) of our model have no released counterpart: {_listing(unmapped)}")
    if missing:
        problems.append(f"{len(missing)} released key(s) missing from the source: {_listing(missing)}")
    if unknown:
        problems.append(f"{len(unknown)} unknown key(s) in the source: {_listing(unknown)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_listing(shapes)}")
    if problems:
        raise ValueError("; ".join(problems))
    return out


def _check_sfmnet_preset(model: str, ours: dict[str, Any]) -> None:
    if model == "sfmnet" and any(".spa_att." in k for k in ours):
        raise ValueError(
            "the released SFMNet computes both FSIB cross-attentions with fre_att (spa_att is never called): "
            "convert with model.shared_fsib_attention=true"
        )


def _released_extras(
    model: str, src: dict[str, torch.Tensor], used: set[str], embed_dim: int, ours: dict[str, torch.Tensor]
) -> set[str]:
    """Released keys with no counterpart in ours that are expected: checked, then dropped."""
    if model in ("sparnet", "mambair", "dic"):
        return set()
    if model == "sfmnet":  # FuseBlock7.spa_att: same shapes as its fre_att
        return {
            k
            for k in src
            if (m := SFM_ATTENTION.fullmatch(k))
            and (twin := f"conv_fuse.{m.group(1)}.fre_att.{m.group(2)}") in src
            and src[k].shape == src[twin].shape
        }
    if model == "wfen":
        expected = wfen_haar(ours)
        for key in (k for k in src if k in expected and src[k].shape == expected[k].shape):
            if not torch.equal(src[key].float(), expected[key]):
                raise ValueError(
                    f"released fixed Haar filter {key} differs from their HaarWavelet's (changed weights?)"
                )
        return {k for k in src if k in expected and src[k].shape == expected[k].shape}
    if model == "swinir":
        return {k for k in src if k not in used and SWINIR_BUFFERS.fullmatch(k)}
    if model == "hybrimamba":  # decoderlayer_3: built, never called by their forward
        return {k for k in src if k.startswith("decoderlayer_3.") and k not in used}
    expected = released_wavelet_weights(embed_dim)
    for key in (k for k in src if RH_WAVELET_KEY.fullmatch(k)):
        if key not in expected or src[key].shape != expected[key].shape:
            continue  # reported as unknown
        if not torch.allclose(src[key].float(), expected[key], atol=1e-6):
            raise ValueError(
                f"released fixed wavelet filter {key} is not the Haar filter (changed weights?): folding the "
                "duplicated wavelet channels would not be exact"
            )
    return {k for k in src if k in expected and src[k].shape == expected[k].shape}


def to_released(ours: dict[str, torch.Tensor], model: str, embed_dim: int) -> dict[str, torch.Tensor]:
    """Our state dict (released preset) -> the released key names and shapes, with their wrapper prefixes."""
    _check_sfmnet_preset(model, ours)
    out: dict[str, torch.Tensor] = {}
    names = released_names(model, list(ours))
    for key, value in ours.items():
        name = names[key]
        if name is None:
            raise ValueError(f"our key {key} has no released counterpart (not a released preset?)")
        if name == FIXED:
            if ".eca_" in key and not torch.equal(value, identity_eca(value)):
                raise ValueError(f"{key} is not an identity ECA kernel: their FIM has no ECA, so it cannot be written")
            continue
        if value.dim() == 4 and ".stb.conv_" in key and value.shape[1] * 2 == value.shape[0]:
            value = (value / 2).repeat_interleave(2, dim=1)  # unfold: each input pair shares the weight
        value = -value if _negated(key) else value
        if name in out and not torch.equal(out[name], value):
            raise ValueError(f"{key} differs from another block written to {name}: the release shares one block")
        out[name] = value.clone()
    if model == "rhmc":
        out.update(released_wavelet_weights(embed_dim))
    if model == "wfen":
        out.update(wfen_haar(ours))
    if model == "sfmnet":  # their FuseBlock7 builds spa_att and never calls it: a copy of fre_att for their strict load
        out.update({re.sub(r"\.fre_att\.", ".spa_att.", k): v.clone() for k, v in out.items() if ".fre_att." in k})
    prefix = "".join(PREFIXES[model])
    return {prefix + k: v for k, v in out.items()}


def unused_top_decoder(model_cfg: dict[str, Any], embed_dim: int) -> dict[str, torch.Tensor]:
    """HybriMamba's ``decoderlayer_3.*`` (built, never called by their forward) for a ``top_decoder: false``
    preset: our top decoder stage of the same settings, seeded, under the released names and prefix."""
    torch.manual_seed(0)
    full = build_model({**model_cfg, "top_decoder": True})
    stage = {k: v for k, v in full.state_dict().items() if k.startswith("decoder3.")}
    return {k: v for k, v in to_released(stage, "hybrimamba", embed_dim).items()}


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"--src {str(path)!r} does not exist")
    try:
        state = safe_load(path)
    except Exception as err:  # noqa: BLE001  (any unpickling failure is a bad input file)
        raise ValueError(f"--src {str(path)!r} is not a readable PyTorch state dict: {load_reason(err)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"--src {str(path)!r} holds a {type(state).__name__}, not a state dict")
    return state


def _load_strict(target: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    try:
        target.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{what} does not fit the configured model: {' '.join(str(err).split())[:2000]}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument(
        "--src", required=True, type=Path, help="released .pth (forward) or our checkpoint / state dict (--reverse)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="our checkpoint for test.py (forward) or the released .pth (--reverse)"
    )
    p.add_argument("--config", default=None, help="our model's YAML (default: configs/<model>_released.yaml)")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--reverse", action="store_true", help="ours -> released (SRC is our checkpoint or state dict)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    args = parse_args(argv)
    default = "configs/{}_released.yaml" if args.model in ("hybrimamba", "rhmc") else TABLE1_CONFIG
    config = args.config or default.format(args.model)
    sets = ["model.shared_fsib_attention=true", *args.set] if args.model == "sfmnet" else args.set  # the release's
    cfg = load_config(config, sets)
    if cfg["model"]["name"] != args.model:
        raise ValueError(f"--config {config} builds model {cfg['model']['name']!r}, not --model {args.model!r}")

    torch.manual_seed(0)
    target = build_model(cfg["model"])
    embed_dim = cfg["model"].get("embed_dim", 32)
    state = _read_state(args.src)
    if args.reverse:
        ours = state["model"] if "model_name" in state and "model" in state else state
        _load_strict(target, ours, f"--src {args.src}")
        converted = to_released(ours, args.model, embed_dim)  # SwinIR: without its rebuilt buffers
        if args.model == "hybrimamba" and not cfg["model"].get("top_decoder", True):
            converted |= unused_top_decoder(cfg["model"], embed_dim)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(converted, args.out)
        print(f"{len(ours)} tensors -> {len(converted)} released keys in {args.out}")
        return converted
    state = unwrap_released(state)
    converted = to_ours(state, args.model, target, embed_dim)
    _load_strict(target, converted, "the converted state dict")
    checkpoint = {"model_name": args.model, "model": converted, "ema": None, "config": cfg, "iteration": 0}
    save_checkpoint({**checkpoint, "converted_from": str(args.src)}, args.out)
    print(f"{len(state)} released keys -> {len(converted)} tensors of {config} in {args.out} (loads with strict=True)")
    return converted


if __name__ == "__main__":
    run_cli(main)
