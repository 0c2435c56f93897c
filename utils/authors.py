"""The authors' command-line flags (LateAutu/HybriMamba train.sh / test.sh, options/*.py), each answered with
one line naming this project's equivalent, so a command copied from their README fails helpfully.

``train.py`` and ``test.py`` call :func:`refuse_authors_flags` before parsing; a flag that is also ours
(``--batch_size`` of test.py, ``--config``, ``--checkpoint``) is never intercepted. The metric scripts
take the folders in the authors' forms too (:func:`folder_args`).
"""

from __future__ import annotations

import argparse
import sys

TRAIN = {
    "--gpus": "bash train.sh CONFIG N (N GPUs: one torchrun process per GPU)",
    "--name": "--set name=NAME (the run folder experiments/NAME)",
    "--model": "--config configs/hybrimamba_x8_celeba.yaml or configs/rhmc_x8_celeba.yaml (model.name in the YAML)",
    "--lr": "--set train.optimizer.lr=VALUE",
    "--beta1": "--set train.optimizer.betas=[BETA1,0.999]",
    "--dataroot": "--set data.train.hr_dir=DIR (aligned HR faces; see README, 'Reproducing the papers')",
    "--batch_size": "--set train.batch_size=N (per process; effective batch = N x GPUs)",
    "--total_epochs": "--set train.epochs=N",
    "--continue_train": "--resume auto",
    "--pretrain_model_path": "--resume PATH (a checkpoint of ours; convert theirs with python -m tools.convert_released)",
    "--scale_factor": "--set scale=8",
    "--load_size": "--set data.train.hr_size=128",
    "--dataset_name": "--set data.train.type=hr_folder (or paired with data.train.lr_dir)",
    "--Gnorm": "model.* keys of the YAML (configs/hybrimamba_released.yaml is their released network)",
    "--visual_freq": "--set logging.sample_every=N",
    "--print_freq": "--set logging.print_every=N",
    "--save_latest_freq": "--set logging.save_every=N",
}
TEST = {
    "--gpus": "--device cuda (test.py runs on one GPU)",
    "--name": "--out-dir DIR (outputs and scores go there)",
    "--model": "--checkpoint CKPT (the network is the one the checkpoint was trained as; --config to override)",
    "--dataroot": "--lr-dir DIR (LR faces; --degrade when DIR holds HR faces; --hr-dir for scores)",
    "--pretrain_model_path": "--checkpoint PATH (convert their .pth first: python -m tools.convert_released "
    "--model hybrimamba --src THEIRS.pth --out OURS.pt)",
    "--save_as_dir": "--out-dir DIR (PNGs in DIR/images)",
    "--load_size": "--hr-size 128",
    "--dataset_name": "nothing: --lr-dir is read as LR faces ('single'); --degrade for HR faces",
    "--scale_factor": "nothing: the scale is the checkpoint's (config key scale)",
    "--Gnorm": "nothing: the network settings are the checkpoint's",
}
SCRIPTS = {"train.py": TRAIN, "test.py": TEST}


def authors_flag_lines(argv: list[str], script: str) -> list[str]:
    """One line per authors' flag found in ``argv`` (``--flag`` or ``--flag=value``), naming ours."""
    table = SCRIPTS[script]
    lines = []
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in table and all(not line.startswith(f"{flag} ") for line in lines):
            lines.append(f"{flag} is a flag of the authors' HybriMamba scripts; here use {table[flag]}")
    return lines


def refuse_authors_flags(argv: list[str] | None, script: str) -> None:
    """Exit with status 2 and one line per authors' flag when ``argv`` (default ``sys.argv[1:]``) holds any."""
    lines = authors_flag_lines(sys.argv[1:] if argv is None else argv, script)
    if lines:
        print("\n".join(f"{script}: {line}" for line in lines), file=sys.stderr)
        raise SystemExit(2)


def folder_args(parser: argparse.ArgumentParser, argv: list[str] | None, order: str) -> argparse.Namespace:
    """Parse a metric script's folders given as ``--pred-dir P --gt-dir G`` (RHMC's README: ``--pred_dir``; RHMC's own
    ``-restored_folder`` / ``-gt_folder`` too) or positionally (``order``: HybriMamba's ``GT_DIR SR_DIR``)."""
    parser.add_argument("folders", nargs="*", metavar="DIR", help=f"positional form: {order} (HybriMamba's scripts)")
    args = parser.parse_args(argv)
    if args.folders:
        if len(args.folders) != 2 or args.pred_dir or args.gt_dir:
            parser.error(f"give two folders ({order}) or --pred-dir P --gt-dir G, not both; got {args.folders}")
        gt, pred = args.folders if order.startswith("GT") else args.folders[::-1]
        args.gt_dir, args.pred_dir = gt, pred
    elif not (args.pred_dir and args.gt_dir):
        parser.error(f"give --pred-dir P --gt-dir G, or two folders: {order}")
    return args
