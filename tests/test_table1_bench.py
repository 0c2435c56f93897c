"""bench/table1.py end to end at tiny scale on CPU (sample faces), and the shipped configs/table1 rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import ablations, table1
from model import build_model, list_models
from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
ROWS = REPO / "configs" / "table1"
SAMPLE = ["data.val.type=sample", "data.val.hr_size=64", "data.val.max_images=2", "logging.tensorboard=false"]
TINY_MAMBAIR = """base: {rows}/mambair.yaml
name: tiny_mambair
model: {{embed_dim: 30, depths: [1], d_state: 2}}
data:
  train: {{type: sample, hr_size: 64, num_workers: 0, random_scale: false}}
train: {{batch_size: 1}}
"""


def table_rows(text: str) -> dict[str, dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    return {
        r["Method"]: r for r in (dict(zip(head, (c.strip() for c in ln.strip("|").split(" | ")))) for ln in lines[1:])
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("table1")
    rows = tmp / "rows"
    rows.mkdir()
    (rows / "protocol.yaml").write_text(f"base: {ROWS / 'protocol.yaml'}\n")
    (rows / "bicubic.yaml").write_text(f"base: {ROWS / 'bicubic.yaml'}\n")
    (rows / "mambair.yaml").write_text(TINY_MAMBAIR.format(rows=ROWS))
    (rows / "unregistered.yaml").write_text(
        "base: protocol.yaml\nname: table1_unregistered\nmodel: {name: no_such_net}\n"
    )
    faces = ablations.export_val_hr(load_config(ROWS / "bicubic.yaml", SAMPLE), tmp / "faces")
    out = tmp / "table.md"
    argv = ["--config_dir", str(rows), "--out", str(out), "--iterations", "2", "--work_dir", str(tmp / "work")]
    argv += ["--device", "cpu", "--lpips_weights", str(tmp / "missing_alexnet.pth")]
    argv += ["--set", *SAMPLE, f"eval.helen_hr_dir={faces}", f"eval.celeba_hr_dir={faces}"]
    table1.main(argv)
    return {"tmp": tmp, "text": out.read_text(), "json": json.loads(out.with_suffix(".json").read_text())}


def test_rows_in_table_order_with_published_values_beside_ours(bench: dict) -> None:
    rows = table_rows(bench["text"])
    assert list(rows) == ["Bicubic", "MambaIR", "unregistered"]
    bicubic = rows["Bicubic"]
    assert bicubic["Helen PSNR ↑"].endswith("(24.07)") and bicubic["CelebA SSIM ↑"].endswith("(0.6605)")
    assert rows["MambaIR"]["Params (M)"].endswith("(20.4)") and rows["MambaIR"]["GMACs"].endswith("(5.3)")
    assert rows["MambaIR"]["Status"] == "ok" and "--iterations 2" in bench["text"]


def test_scores_are_test_py_summaries_on_each_set(bench: dict) -> None:
    rows = table_rows(bench["text"])
    for method, name in (("Bicubic", "table1_bicubic"), ("MambaIR", "tiny_mambair")):
        for s in ("Helen", "CelebA"):
            summary = json.loads((bench["tmp"] / "work" / name / f"test_{s}" / "summary.json").read_text())
            assert summary["count"] == 2
            assert rows[method][f"{s} PSNR ↑"].startswith(f"{summary['psnr']:.2f}")
            assert rows[method][f"{s} VIF ↑"] == f"{summary['vif']:.4f}"
    trained = json.loads((bench["tmp"] / "work" / "tiny_mambair" / "test_Helen" / "summary.json").read_text())
    assert trained["iteration"] == 2


def test_complexity_is_counted_at_the_lr_for_lr_input_networks(bench: dict) -> None:
    by_stem = {r["stem"]: r for r in bench["json"]}
    assert by_stem["mambair"]["input_size"] == 8 and by_stem["bicubic"]["input_size"] == 64
    net = build_model(load_config(bench["tmp"] / "rows" / "mambair.yaml", SAMPLE)["model"])
    assert by_stem["mambair"]["params"] == sum(p.numel() for p in net.parameters())


def test_footnote_names_the_networks_counted_at_the_lr() -> None:
    assert table1.lr_input_rows() == ["DIC", "SwinIR", "MambaIR"]  # the rows whose classes set lr_input


def test_an_unregistered_network_fails_with_its_reason_and_the_others_go_on(bench: dict) -> None:
    row = table_rows(bench["text"])["unregistered"]
    assert row["Status"].startswith("failed:") and "unknown model 'no_such_net'" in row["Status"]
    assert row["Helen PSNR ↑"] == "—"


def test_row_selection_and_missing_rows() -> None:
    assert [p.stem for p in table1.row_configs(ROWS, ["swinir", "bicubic"])] == ["bicubic", "swinir"]
    with pytest.raises(FileNotFoundError, match="--rows nope"):
        table1.row_configs(ROWS, ["nope"])


def test_shipped_rows_share_the_protocol() -> None:
    protocol = load_config(ROWS / "protocol.yaml")
    stems = {p.stem for p in table1.row_configs(ROWS, None)}
    assert {"bicubic", "sparnet", "swinir", "mambair", "hybrimamba", "rhmc"} <= stems
    for stem in stems:
        try:
            cfg = load_config(ROWS / f"{stem}.yaml")
        except ValueError:
            assert stem in ("dic", "sfmnet", "wfen") and not {"dic", "sfmnet", "wfen"} <= set(list_models())
            continue
        assert cfg["eval"] == protocol["eval"] and cfg["scale"] == protocol["scale"] == 8, stem
        assert cfg["data"]["val"] == protocol["data"]["val"], stem
        train, shared = cfg["data"]["train"], protocol["data"]["train"]
        assert {k: train[k] for k in ("hr_dir", "hr_size", "resize_kernel")} == {
            k: shared[k] for k in ("hr_dir", "hr_size", "resize_kernel")
        }, stem


def test_test_py_gives_lr_input_networks_the_lr(tmp_path: Path) -> None:
    import test as test_script
    from data.degrade import degrade, to_tensor
    from data.sample import face_crops
    from utils.image_io import DataError

    hr = face_crops(1)[0].resize((64, 64))
    small, up = degrade(hr, 8)
    for name, img in (("hr", hr), ("small", small), ("up", up)):
        img.save(tmp_path / f"{name}.png")
    x, kind = test_script.network_input(tmp_path / "hr.png", None, 8, 64, True, "pil", lr_input=True)
    assert kind == "degraded" and torch.equal(x, to_tensor(small))
    x, kind = test_script.network_input(tmp_path / "small.png", hr, 8, 64, False, "pil", lr_input=True)
    assert kind == "small" and x.shape == (3, 8, 8)
    assert test_script.network_input(tmp_path / "small.png", hr, 8, 64, False, "pil")[0].shape == (3, 64, 64)
    with pytest.raises(DataError, match="already upsampled"):
        test_script.network_input(tmp_path / "up.png", hr, 8, 64, False, "pil", lr_input=True)


def test_training_an_lr_input_network_on_upsampled_lr_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import train
    from data.degrade import degrade
    from data.sample import face_crops

    for sub in ("HR", "LR"):
        (tmp_path / sub).mkdir()
    for i, face in enumerate(face_crops(2)):
        hr = face.resize((64, 64))
        hr.save(tmp_path / "HR" / f"{i}.png")
        degrade(hr, 8)[1].save(tmp_path / "LR" / f"{i}.png")  # the 64x64 bicubic upsampling
    cfg = tmp_path / "row.yaml"
    cfg.write_text(TINY_MAMBAIR.format(rows=ROWS))
    paired = f"{{type: paired, hr_dir: {tmp_path / 'HR'}, lr_dir: {tmp_path / 'LR'}, hr_size: 64, num_workers: 0}}"
    argv = ["--config", str(cfg), "--set", f"data.train={paired}", "data.val.type=none"]
    assert train.main([*argv, f"paths.experiments_root={tmp_path / 'runs'}", "logging.tensorboard=false"]) == 1
    assert "takes the HR/8 LR, but data.train.lr_dir holds upsampled LR images" in capsys.readouterr().err
