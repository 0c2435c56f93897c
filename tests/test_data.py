"""Data pipeline: MATLAB imresize values, file checks, pairing, degradation, augmentation,
the demo sample set and ``python -m data.prepare``."""

from __future__ import annotations

import hashlib
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from data import DataError, HRAugment, build_dataset
from data.degrade import fit_hr
from data.imresize import imresize
from data.prepare import main as prepare_main
from utils.image_io import read_pair, read_rgb_image

BICUBIC = Image.Resampling.BICUBIC


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, array: np.ndarray, **kw) -> None:
    Image.fromarray(array).save(path, **kw)


def _chw(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 255


def _pil(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


# ---------------------------------------------------------------- MATLAB imresize


def test_imresize_upscale_x2_hand_values():
    # Cubic kernel a=-0.5: k(.25)=.8671875, k(.75)=.2265625, k(1.25)=-.0703125, k(1.75)=-.0234375.
    # u = x/2 + 1/4; symmetric padding [.., 2, 1 | 1 2 3 4 | 4, 3 ..]. E.g. x=1, u=.75:
    # 2*k(1.75) + 1*k(.75) + 1*k(.25) + 2*k(1.25) = .90625; interior samples reproduce the ramp.
    expected = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    out = imresize(np.array([[1.0, 2.0, 3.0, 4.0]]), 2)
    assert out.shape == (2, 8)
    np.testing.assert_allclose(out, [expected, expected], rtol=0, atol=1e-12)


def test_imresize_downscale_x2_hand_values():
    # Antialiased x1/2: h(t) = k(t/2)/2, taps at |d| = .5, 1.5, 2.5, 3.5 weigh .43359375, .11328125,
    # -.03515625, -.01171875; u = 2x - 1/2. A ramp is reproduced except where padding bends it:
    # x=1 (u=1.5): 1.5 + 5(-.01171875) + 3(-.03515625) + 1(.11328125) = 1.44921875.
    out = imresize(np.arange(1.0, 9.0)[None], 0.5)
    np.testing.assert_allclose(out, [[1.44921875, 3.48828125, 5.51171875, 7.55078125]], rtol=0, atol=1e-12)


def test_imresize_downscale_x4_hand_values():
    # Antialiased x1/4 of 1..8: h(t) = k(t/4)/4, u = 4x - 3/2 = 2.5; padded samples j=-5..0 and
    # 9, 10 deviate from the ramp by 11, 9, 7, 5, 3, 1, -1, -3 with weights k(1.875)/4 ...
    # k(0.625)/4, k(1.625)/4, k(1.875)/4 -> 2.5 - 0.1240234375; the other output by symmetry.
    out = imresize(np.arange(1.0, 9.0)[None], 0.25)
    np.testing.assert_allclose(out, [[2.3759765625, 6.6240234375]], rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 0.25, 0.125, 2, 3])
def test_imresize_matches_pil_float_bicubic_away_from_borders(scale):
    # PIL's float bicubic uses the same kernel, centres and antialiasing; only borders differ
    # (PIL renormalises truncated taps, MATLAB pads symmetrically).
    a = np.random.default_rng(1).random((48, 48)).astype(np.float32)
    out = imresize(a.astype(np.float64), scale)
    n = out.shape[0]
    ref = np.asarray(Image.fromarray(a, mode="F").resize((n, n), BICUBIC), dtype=np.float64)
    b = int(3 * max(scale, 1))
    np.testing.assert_allclose(out[b:-b, b:-b], ref[b:-b, b:-b], rtol=0, atol=1e-6)


def test_imresize_constant_shapes_and_uint8():
    np.testing.assert_allclose(imresize(np.full((13, 7, 3), 0.3), 0.37), 0.3, rtol=0, atol=1e-12)
    out = imresize(np.full((16, 24, 3), 77, np.uint8), 1 / 8)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3) and (out == 77).all()
    assert imresize(np.zeros((17, 10)), 0.5).shape == (9, 5)  # ceil(in * scale)
    assert imresize(np.zeros((8, 8, 3)), output_shape=(5, 12)).shape == (5, 12, 3)
    # uint8 results are rounded and clipped (a step edge overshoots in float).
    step = np.zeros((8, 8), np.uint8)
    step[:, 4:] = 255
    f, u = imresize(step.astype(float), 3), imresize(step, 3)
    assert f.min() < 0 and f.max() > 255
    assert u.dtype == np.uint8 and u.min() == 0 and u.max() == 255
    assert np.abs(u.astype(float) - np.clip(f, 0, 255)).max() <= 1
    with pytest.raises(ValueError, match="exactly one"):
        imresize(step, 2, output_shape=(3, 3))


# ---------------------------------------------------------------- decoding policy


def test_grayscale_rgba_palette_16bit_become_rgb(tmp_path, caplog):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    _save(tmp_path / "g.png", gray)
    out = np.asarray(read_rgb_image(tmp_path / "g.png"))
    assert out.shape == (6, 8, 3) and all((out[..., c] == gray).all() for c in range(3))

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[1, 0] = (0, 0, 0, 128)  # half: mid grey
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(read_rgb_image(tmp_path / "a.png")).astype(int)
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [255, 255, 255]
    assert np.abs(out[1, 0] - 127).max() <= 1

    g16 = np.array([[0, 65535], [32768, 257]], dtype=np.uint16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = np.asarray(read_rgb_image(tmp_path / "d.png"))
    assert out[..., 0].tolist() == [[0, 255], [128, 1]]  # round(v * 255 / 65535), not clipping

    pal = Image.fromarray(_rgb(4, 4)).quantize(8)
    pal.save(tmp_path / "p.png")
    assert np.array_equal(np.asarray(read_rgb_image(tmp_path / "p.png")), np.asarray(pal.convert("RGB")))

    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif.*floating"):
        read_rgb_image(tmp_path / "f.tif")


# ---------------------------------------------------------------- folders and bad files


def _hr_section(folder, **kw) -> dict:
    return {"type": "hr_folder", "hr_dir": str(folder), "hr_size": 32, "flip": False, "random_scale": False, **kw}


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"data\.train\.hr_dir '.*nope' does not exist"):
        build_dataset(_hr_section(tmp_path / "nope"), 8, True)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"contains no images; accepted extensions.*\.png.*\.jpg"):
        build_dataset(_hr_section(tmp_path), 8, True)
    with pytest.raises(DataError, match=r"data\.val\.lr_dir is required"):
        build_dataset({"type": "paired"}, 8, False)


def test_bad_files_are_named_and_skip_bad_counts(tmp_path, caplog):
    for i in range(3):
        _save(tmp_path / f"ok{i}.png", _rgb(40, 36, i))
    (tmp_path / "text.png").write_text("not an image")
    _save(tmp_path / "small.jpg", _rgb(30, 20))
    with pytest.raises(DataError, match=r"small\.jpg' is 20x30 \(WxH\), smaller than the minimum 32x32.*hr_size"):
        build_dataset(_hr_section(tmp_path), 8, True)
    (tmp_path / "small.jpg").unlink()
    with pytest.raises(DataError, match=r"text\.png.*skip_bad=true"):
        build_dataset(_hr_section(tmp_path), 8, True)
    _save(tmp_path / "small.jpg", _rgb(30, 20))
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(_hr_section(tmp_path, skip_bad=True), 8, True)
    assert len(ds) == 3 and [ds[i]["name"] for i in range(3)] == ["ok0", "ok1", "ok2"]
    assert "skipped 2 bad file(s) of 5" in caplog.text and "text.png" in caplog.text


def test_truncated_files_are_found_by_the_scan_and_corrupt_pixels_at_decode(tmp_path, caplog):
    _save(tmp_path / "a.png", _rgb(32, 32, 1))
    _save(tmp_path / "b.png", _rgb(32, 32, 2))
    _save(tmp_path / "c.jpg", _rgb(32, 32, 3))
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b\.png' is truncated: the PNG file stops before its end marker.*skip_bad"):
        build_dataset(_hr_section(tmp_path), 8, True)  # at construction, before any training
    jpg = (tmp_path / "c.jpg").read_bytes()
    (tmp_path / "c.jpg").write_bytes(jpg[: len(jpg) - 100])
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(_hr_section(tmp_path, skip_bad=True), 8, True)
    assert len(ds) == 1 and "skipped 2 bad file(s) of 3" in caplog.text and "c.jpg' is truncated" in caplog.text

    (tmp_path / "c.jpg").write_bytes(jpg + bytes(range(256)) * 4)  # data appended after a complete JPEG: fine
    assert len(build_dataset(_hr_section(tmp_path, skip_bad=True), 8, True)) == 2
    (tmp_path / "c.jpg").unlink()
    idat = data.index(b"IDAT") + 8  # complete file, scrambled compressed pixels: only decoding finds it
    (tmp_path / "b.png").write_bytes(data[:idat] + bytes(64) + data[idat + 64 :])
    ds = build_dataset(_hr_section(tmp_path), 8, True)
    with pytest.raises(DataError, match=r"b\.png.*skip_bad=true"):
        ds[1]
    ds = build_dataset(_hr_section(tmp_path, skip_bad=True), 8, True)
    with caplog.at_level(logging.WARNING):
        item = ds[1]
    assert item["name"] == "a" and "b.png" in caplog.text


def test_read_rgb_scales_16_bit_rgb_and_gray(tmp_path):
    import struct
    import zlib

    def png(path, ctype, values):  # a hand-written 16-bit PNG (Pillow cannot write 16-bit RGB)
        def chunk(tag, body):
            return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

        h, w = values.shape[:2]
        raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
        ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
        )

    rgb = np.array([[[65535, 32768, 257], [1000, 0, 65280]]])
    png(tmp_path / "rgb16.png", 2, rgb)
    out = np.asarray(read_rgb_image(tmp_path / "rgb16.png")).astype(int)
    assert np.array_equal(out, np.floor(rgb / 257 + 0.5))  # both bytes used: round(v / 257), not clipped

    scored, _ = read_pair(tmp_path / "rgb16.png", tmp_path / "rgb16.png")  # how the metric scripts read
    assert np.array_equal(scored, out)  # one policy for training data and metrics
    gray = np.array([[0, 65535, 32768, 1000]])
    png(tmp_path / "g16.png", 0, gray)
    out = np.asarray(read_rgb_image(tmp_path / "g16.png"))
    assert out.shape == (1, 4, 3) and out[..., 1].tolist() == [[0, 255, 128, 4]]


def test_config_errors(tmp_path):
    assert build_dataset({"type": "none"}, 8, False) is None
    with pytest.raises(DataError, match=r"unknown key\(s\) data\.train\.flp"):
        build_dataset({"type": "sample", "flp": True}, 8, True)
    with pytest.raises(DataError, match=r"hr_size=36 must be a positive multiple of the scale 8"):
        build_dataset({"type": "sample", "hr_size": 36}, 8, True)
    for bad in ([1.3, 1.0], [0.2, 1.0], [1.0]):
        with pytest.raises(DataError, match=r"data\.train\.scale_range must be"):
            build_dataset({"type": "sample", "hr_size": 32, "scale_range": bad}, 8, True)


def test_resolved_config_sections_build():
    from utils.config import resolve_config

    cfg = resolve_config({"data": {"train": {"type": "sample", "hr_size": 32, "max_images": 3}}})
    ds = build_dataset(cfg["data"]["train"], cfg["scale"], True)
    assert len(ds) == 3 and ds[0]["lr_small"].shape == (3, 4, 4)
    assert len(build_dataset(cfg["data"]["val"], cfg["scale"], False)) == 4


# ---------------------------------------------------------------- pairing


def test_pairing_errors_list_unmatched_names(tmp_path):
    lr, hr = tmp_path / "LR", tmp_path / "HR"
    lr.mkdir(), hr.mkdir()
    for n in ("a", "b", "x_lr"):
        _save(lr / f"{n}.png", _rgb(4, 4))
    for n in ("a", "b", "y_hr", "z_hr"):
        _save(hr / f"{n}.jpg", _rgb(32, 32))
    section = {"type": "paired", "lr_dir": str(lr), "hr_dir": str(hr)}
    with pytest.raises(
        DataError, match=r"1 LR name\(s\) without HR \[x_lr\]; 2 HR name\(s\) without LR \[y_hr, z_hr\]"
    ):
        build_dataset(section, 8, False)
    (lr / "x_lr.png").unlink(), (hr / "y_hr.jpg").unlink(), (hr / "z_hr.jpg").unlink()
    _save(lr / "a.JPG", _rgb(4, 4))
    with pytest.raises(DataError, match=r"two files with the stem 'a': a\.JPG and a\.png"):
        build_dataset(section, 8, False)


def test_paired_small_upsampled_lr_only_and_mismatch(tmp_path):
    lr, up, hr = (tmp_path / d for d in ("LR", "UP", "HR"))
    for d in (lr, up, hr):
        d.mkdir()
    hr_img = {n: _rgb(32, 32, i) for i, n in enumerate(("p", "q"))}
    for n, a in hr_img.items():
        _save(hr / f"{n}.png", a)
        small = Image.fromarray(a).resize((4, 4), BICUBIC)
        small.save(lr / f"{n}.PNG")
        small.resize((32, 32), BICUBIC).save(up / f"{n}.bmp")
    ds = build_dataset({"type": "paired", "lr_dir": str(lr), "hr_dir": str(hr)}, 8, False)
    item = ds[1]
    assert item["name"] == "q" and torch.equal(item["hr"], _chw(hr_img["q"]))
    assert torch.equal(item["lr_small"], _chw(np.asarray(Image.open(lr / "q.PNG"))))
    assert torch.equal(item["lr"], _chw(np.asarray(Image.open(up / "q.bmp"))))
    item = build_dataset({"type": "paired", "lr_dir": str(up), "hr_dir": str(hr)}, 8, False)[1]
    assert "lr_small" not in item and torch.equal(item["lr"], _chw(np.asarray(Image.open(up / "q.bmp"))))
    item = build_dataset({"type": "paired", "lr_dir": str(lr)}, 8, False)[0]
    assert set(item) == {"lr", "lr_small", "name"} and item["lr"].shape == (3, 32, 32)
    _save(lr / "q.PNG", _rgb(5, 4))
    with pytest.raises(DataError, match=r"q\.PNG' is 4x5 but its HR .*q\.png' is 32x32; expected LR 4x4"):
        build_dataset({"type": "paired", "lr_dir": str(lr), "hr_dir": str(hr)}, 8, False)
    (up / "q.bmp").unlink()
    _save(up / "q.bmp", _rgb(4, 4))
    with pytest.raises(
        DataError, match=r"mixes LR images of HR size \(e\.g\. p\.bmp\) and HR/8 size \(e\.g\. q\.bmp\)"
    ):
        build_dataset({"type": "paired", "lr_dir": str(up), "hr_dir": str(hr)}, 8, False)


# ---------------------------------------------------------------- degradation


def test_degradation_sizes_and_pil_chain(tmp_path):
    raw = _rgb(128, 160, 3)  # H x W: centre crop takes columns 16..143
    _save(tmp_path / "face.png", raw)
    item = build_dataset(_hr_section(tmp_path, hr_size=128), 8, False)[0]
    assert item["hr"].shape == (3, 128, 128) and item["lr_small"].shape == (3, 16, 16)
    assert item["lr"].shape == (3, 128, 128)
    assert torch.equal(item["hr"], _chw(raw[:, 16:144]))
    small = Image.fromarray(raw[:, 16:144]).resize((16, 16), BICUBIC)
    assert torch.equal(item["lr_small"], _chw(np.asarray(small)))
    assert torch.equal(item["lr"], _chw(np.asarray(small.resize((128, 128), BICUBIC))))

    x4 = build_dataset(_hr_section(tmp_path, fit="resize", resize_kernel="matlab"), 4, False)[0]
    hr = np.asarray(Image.fromarray(raw).resize((32, 32), BICUBIC))
    assert torch.equal(x4["hr"], _chw(hr))
    assert torch.equal(x4["lr_small"], _chw(imresize(hr, 0.25)))
    assert torch.equal(x4["lr"], _chw(imresize(imresize(hr, 0.25), 4)))


# ---------------------------------------------------------------- augmentation


def test_flip_is_identity_or_exact_mirror_and_seeded():
    img = Image.fromarray(_rgb(16, 16, 5))
    aug = HRAugment(flip=True, scale=False)
    torch.manual_seed(0)
    outs = [np.asarray(aug(img)) for _ in range(24)]
    mirror = np.asarray(img)[:, ::-1]
    flags = [np.array_equal(o, mirror) for o in outs]
    assert all(f or np.array_equal(o, np.asarray(img)) for f, o in zip(flags, outs))
    assert 0 < sum(flags) < 24
    torch.manual_seed(0)
    assert [np.array_equal(np.asarray(aug(img)), mirror) for _ in range(24)] == flags


def test_random_scale_identity_zoom_in_and_zoom_out():
    img = Image.fromarray(_rgb(32, 32, 6))
    assert np.array_equal(np.asarray(HRAugment(False, True, [1.0, 1.0])(img)), np.asarray(img))
    torch.manual_seed(1)
    out = np.asarray(HRAugment(False, True, [1.25, 1.25])(img))  # 40x40, random 32x32 window
    big = np.asarray(img.resize((40, 40), BICUBIC))
    windows = [
        (t, left) for t in range(9) for left in range(9) if np.array_equal(big[t : t + 32, left : left + 32], out)
    ]
    assert len(windows) == 1
    out = np.asarray(HRAugment(False, True, [0.75, 0.75])(img))  # 24x24 centred, 4 px reflect pad
    small = np.asarray(img.resize((24, 24), BICUBIC))
    assert out.shape == (32, 32, 3) and np.array_equal(out[4:28, 4:28], small)
    assert np.array_equal(out[4:28, 3], small[:, 1]) and np.array_equal(out[0, 4:28], small[4])


def test_training_items_deterministic_under_seed_and_dataloader_workers():
    # Augmentation draws from torch's global RNG: the main process's with num_workers=0, each
    # worker's (seeded by DataLoader from the loader generator) otherwise.
    section = {"type": "sample", "hr_size": 32, "flip": True, "random_scale": True, "max_images": 8}
    ds = build_dataset(section, 8, True)

    def epoch(seed: int, workers: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=workers, generator=gen)
        return [b["lr"] for b in loader]

    for workers in (0, 2):
        a, b, c = epoch(7, workers), epoch(7, workers), epoch(8, workers)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
        assert not all(torch.equal(x, y) for x, y in zip(a, c))


# ---------------------------------------------------------------- sample set


def test_sample_set_shapes_names_and_determinism():
    train = build_dataset({"type": "sample"}, 8, True)
    val = build_dataset({"type": "sample"}, 8, False)
    assert len(train) == 16 and len(val) == 4
    item = train[0]
    assert item["hr"].shape == (3, 128, 128) and item["lr"].shape == (3, 128, 128)
    assert item["lr_small"].shape == (3, 16, 16) and 0 <= item["hr"].min() and item["hr"].max() <= 1
    names = [train[i]["name"] for i in range(16)] + [val[i]["name"] for i in range(4)]
    assert len(set(names)) == 20
    assert not torch.equal(train[0]["hr"], val[0]["hr"])
    again = build_dataset({"type": "sample"}, 8, False)
    assert all(torch.equal(val[i]["hr"], again[i]["hr"]) for i in range(4))
    torch.manual_seed(3)
    x = [train[i]["lr"] for i in range(4)]
    torch.manual_seed(3)
    assert all(torch.equal(a, train[i]["lr"]) for i, a in enumerate(x))
    rep = build_dataset({"type": "sample", "hr_size": 32, "repeat": 3, "max_images": 2}, 4, True)
    assert len(rep) == 6 and rep[5]["name"] == rep[1]["name"] == "astronaut_train_01"


# ---------------------------------------------------------------- data.prepare


def test_prepare_end_to_end_manifest_and_consistency(tmp_path, caplog):
    src, out = tmp_path / "raw", tmp_path / "out"
    src.mkdir()
    _save(src / "wide.jpg", _rgb(40, 48, 1), quality=95)
    Image.fromarray(_rgb(64, 64, 2)[..., 0]).save(src / "gray.png")
    (src / "junk.png").write_text("junk")
    assert prepare_main(["--src", str(src), "--out", str(out), "--size", "32", "--scale", "4"]) == 2
    assert not (out / "HR").exists() and not (out / "manifest.json").exists()

    args = ["--src", str(src), "--out", str(out), "--size", "32", "--scale", "4", "--skip_bad"]
    with caplog.at_level(logging.WARNING):
        assert prepare_main(args) == 0
    assert "skipped 1 bad file(s) of 3" in caplog.text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 2 and [s["source"] for s in manifest["skipped"]] == ["junk.png"]
    assert [r["name"] for r in manifest["files"]] == ["gray", "wide"]
    for rec in manifest["files"]:
        assert hashlib.sha256((src / rec["source"]).read_bytes()).hexdigest() == rec["source_sha256"]
        for sub, side in (("HR", 32), ("LR", 8), ("LR_up", 32)):
            path = out / rec[sub]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == rec[f"{sub}_sha256"]
            assert Image.open(path).size == (side, side) and Image.open(path).mode == "RGB"
    hr = np.asarray(Image.open(out / "HR" / "wide.png"))
    assert np.array_equal(hr, np.asarray(fit_hr(Image.open(src / "wide.jpg").convert("RGB"), 32)))

    on_the_fly = build_dataset(_hr_section(out / "HR"), 4, False)
    paired = build_dataset({"type": "paired", "lr_dir": str(out / "LR"), "hr_dir": str(out / "HR")}, 4, False)
    pre_up = build_dataset({"type": "paired", "lr_dir": str(out / "LR_up"), "hr_dir": str(out / "HR")}, 4, False)
    for i in range(2):
        for key in ("lr", "lr_small", "hr"):
            assert torch.equal(on_the_fly[i][key], paired[i][key])
        assert torch.equal(pre_up[i]["lr"], paired[i]["lr"])

    assert prepare_main(args) == 2  # refuses to overwrite
    assert prepare_main([*args, "--overwrite", "--kernel", "matlab"]) == 0
    lr = np.asarray(Image.open(out / "LR" / "wide.png"))
    assert np.array_equal(lr, imresize(hr, 0.25))
