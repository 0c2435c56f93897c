"""bench/ablations.py end to end at tiny scale on CPU, and the shipped configs/ablations/ rows."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bench import ablations
from model import build_model
from utils.config import load_config

REPO = Path(__file__).resolve().parents[1]
ROWS_DIR = REPO / "configs" / "ablations"
# Validation on 2 sample faces at 48x48 (x8 -> 6x6 LR; pixel-domain VIF needs at least 41x41).
VAL_SET = ["data.val.type=sample", "data.val.hr_size=48", "data.val.max_images=2", "logging.tensorboard=false"]
TINY = """base: {base}
name: tiny_no_fwm
model: {{embed_dim: 4, depth: 1, n_layers: 1, d_state: 4}}
data:
  train: {{type: sample, hr_size: 48, num_workers: 0, random_scale: false}}
train: {{batch_size: 1}}
"""


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """Markdown table -> {row name: {column: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split(" | ")))) for line in lines[1:]]
    return {r["Row"]: r for r in rows}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("ablations")
    tiny = tmp / "tiny_no_fwm.yaml"
    tiny.write_text(TINY.format(base=ROWS_DIR / "hybrimamba_no_fwm.yaml"))
    broken = tmp / "broken.yaml"
    missing = tmp / "no_such_folder"
    broken.write_text(
        f"base: tiny_no_fwm.yaml\nname: tiny_broken\ndata: {{train: {{type: hr_folder, hr_dir: {missing}}}}}\n"
    )
    configs = [ROWS_DIR / "bicubic.yaml", tiny, broken]
    out = tmp / "table.md"
    argv = [*map(str, configs), "--out", str(out), "--iterations", "2", "--work_dir", str(tmp / "work")]
    argv += ["--device", "cpu", "--lpips_weights", str(tmp / "missing_alexnet.pth"), "--set", *VAL_SET]
    ablations.main(argv)
    return {
        "tmp": tmp,
        "configs": configs,
        "text": out.read_text(),
        "json": out.with_suffix(".json"),
        "missing": missing,
    }


def test_one_row_per_config_with_the_protocol_header(bench: dict) -> None:
    rows = table_rows(bench["text"])
    assert list(rows) == ["ablation_bicubic", "tiny_no_fwm", "tiny_broken"]
    assert "- Budget: 2 iterations" in bench["text"]
    assert "python -m bench.ablations " in bench["text"] and "--iterations 2" in bench["text"]
    assert "S = 48" in bench["text"]
    assert len(json.loads(bench["json"].read_text())) == 3


def test_metrics_are_the_summary_json_values(bench: dict) -> None:
    rows = table_rows(bench["text"])
    for name in ("ablation_bicubic", "tiny_no_fwm"):
        summary = json.loads((bench["tmp"] / "work" / name / "test" / "summary.json").read_text())
        assert summary["count"] == 2
        assert rows[name]["PSNR (dB) ↑"] == f"{summary['psnr']:.4f}"
        assert rows[name]["SSIM ↑"] == f"{summary['ssim']:.4f}"
        assert rows[name]["VIF ↑"] == f"{summary['vif']:.4f}"
        assert rows[name]["Status"].startswith("ok")
    trained = json.loads((bench["tmp"] / "work" / "tiny_no_fwm" / "test" / "summary.json").read_text())
    assert trained["iteration"] == 2


def test_params_are_the_built_models_parameter_count(bench: dict) -> None:
    rows = table_rows(bench["text"])
    for path, name in zip(bench["configs"][:2], ("ablation_bicubic", "tiny_no_fwm")):
        net = build_model(load_config(path, VAL_SET)["model"])
        weights = sum(p.numel() for p in net.parameters() if not getattr(p, "_placeholder", False))
        assert int(rows[name]["Params"].replace(",", "")) == weights
    assert rows["ablation_bicubic"]["Params"] == "0"  # its dummy scalar is no weight (it showed "1")
    assert rows["ablation_bicubic"]["GFLOPs"] == "0.000"  # the identity on its input: no counted op
    assert float(rows["tiny_no_fwm"]["GFLOPs"]) > 0


def test_train_speed_is_the_median_log_rate_times_batch(bench: dict) -> None:
    rows = table_rows(bench["text"])
    log = (bench["tmp"] / "work" / "tiny_no_fwm" / "train.log").read_text().splitlines()
    rates = [float(line.split()[-2]) for line in log if line.endswith(" it/s")]
    assert len(rates) == 2  # print_every = 1 for a 2-iteration budget
    assert rows["tiny_no_fwm"]["Train img/s"] == f"{statistics.median(rates[1:]) * 1 * 1:.1f}"
    assert rows["ablation_bicubic"]["Train img/s"] == "—"
    assert not (bench["tmp"] / "work" / "ablation_bicubic" / "train.log").exists()  # not trained


def test_missing_lpips_weights_give_na_and_a_footnote(bench: dict) -> None:
    rows = table_rows(bench["text"])
    assert rows["tiny_no_fwm"]["LPIPS ↓ [1]"] == "n/a"
    assert "[1] LPIPS not scored" in bench["text"] and "missing_alexnet.pth" in bench["text"]


def test_a_broken_row_is_reported_failed_without_stopping_the_table(bench: dict) -> None:
    row = table_rows(bench["text"])["tiny_broken"]
    assert row["Status"].startswith("failed: train.py exited with status 1")
    assert str(bench["missing"]) in row["Status"]
    assert row["PSNR (dB) ↑"] == row["VIF ↑"] == row["Train img/s"] == "—"
    assert int(row["Params"].replace(",", "")) > 0  # measured before the failing step


def test_speed_parser_on_hand_written_log() -> None:
    log = "\n".join(
        [
            "2024-01-01 00:00:00 INFO model x on cpu; world size 2, batch size 3 per process, effective batch size 6",
            *(
                f"2024-01-01 00:00:0{i} INFO iter {i}/4 epoch 0  l1 0.5  lr 1.0e-03  {r} it/s"
                for i, r in enumerate("1243", 1)
            ),
        ]
    )
    assert ablations.train_images_per_s(log) == 3.0 * 3 * 2  # median(2, 4, 3) after the first window
    with pytest.raises(ablations.RowError, match="it/s"):
        ablations.train_images_per_s("nothing logged")


def test_config_arguments_expand_and_fail_clearly(tmp_path: Path) -> None:
    found = ablations.expand_configs([str(ROWS_DIR)])
    assert ROWS_DIR / "bicubic.yaml" in found and ROWS_DIR / "_protocol.yaml" not in found
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        ablations.expand_configs([str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit):
        ablations.parse_args(["x.yaml", "--out", "t.md", "--iterations", "0"])


def test_shipped_rows_share_one_protocol_and_differ_only_in_the_model() -> None:
    paths = ablations.expand_configs([str(ROWS_DIR)])
    cfgs = {p.stem: load_config(p) for p in paths}
    assert {"bicubic", "sparnet", "mamba1d", "hybrimamba", "rhmc"} <= set(cfgs)
    assert len({c["name"] for c in cfgs.values()}) == len(cfgs)
    protocol = load_config(ROWS_DIR / "_protocol.yaml")
    for cfg in cfgs.values():
        assert {k: v for k, v in cfg.items() if k not in ("name", "model")} == {
            k: v for k, v in protocol.items() if k not in ("name", "model")
        }
        assert cfg["data"]["train"]["hr_size"] == cfg["data"]["val"]["hr_size"] == 128
    switches = {
        "hybrimamba_no_fwm": ("hybrimamba", "use_fwm"),
        "hybrimamba_no_symmetry": ("hybrimamba", "use_symmetry"),
        "hybrimamba_no_lem_gate": ("hybrimamba", "use_lem_gate"),
        "rhmc_no_rmoe": ("rhmc", "use_rmoe"),
        "rhmc_no_fam": ("rhmc", "use_fam"),
        "rhmc_haar": ("rhmc", "wavelet"),
        "rhmc_shared_blocks": ("rhmc", "share_block_weights"),
    }
    for stem, (full, key) in switches.items():
        diff = {k for k in cfgs[full]["model"] if cfgs[full]["model"][k] != cfgs[stem]["model"][k]}
        assert diff == {key}, stem
