"""Turn a folder of raw face photos into an SR test/train folder with a checksummed manifest.

    python -m data.prepare --src RAW_DIR --out OUT_DIR [--size 128] [--scale 8]
        [--fit center_crop|resize] [--kernel pil|matlab] [--landmarks FILE] [--skip-bad] [--workers N]
        [--overwrite]

Writes OUT_DIR/HR (size x size PNG), OUT_DIR/LR (size/scale PNG), OUT_DIR/LR_up (bicubic back
up to size, PNG), each named ``<source stem>.png``, and OUT_DIR/manifest.json (settings, one
record per image with the SHA-256 of its source and of the three written files, skipped files
with the reason). Images go through the same decoding policy (:mod:`utils.image_io`) and degradation
(:mod:`data.degrade`) as the on-the-fly datasets, so ``paired`` on LR/HR and ``hr_folder`` on HR
give the same tensors. With ``--landmarks`` (a DIC annotation pickle, CelebA's
list_landmarks_align_celeba.txt or a landmarks JSON, see :mod:`data.landmarks`) each face is
cropped by its annotation's bbox when it has one, and OUT_DIR/landmarks.json holds the points
in the HR images' pixels (what ``paired`` sets read as ``data.*.landmarks``).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data.degrade import FITS, KERNELS, degrade, fit_hr
from data.landmarks import JSON_FORMAT, Landmarks, LandmarkSet, fit_face, hr_points, read_landmarks
from utils.cli import ArgumentParser, os_error_message
from utils.image_io import (
    DataError,
    check_min_size,
    file_sha256,
    index_by_stem,
    list_images,
    open_header,
    read_rgb_image,
    scan,
)

log = logging.getLogger("data.prepare")

SUBDIRS = ("HR", "LR", "LR_up")
MANIFEST = "manifest.json"
LANDMARKS = "landmarks.json"


def _prepare_one(job: tuple[Path, Path, int, int, str, str, bool, Landmarks | None]) -> dict[str, Any]:
    src, out, size, scale, fit, kernel, skip_bad, face = job
    try:
        img = read_rgb_image(src)
        check_min_size(src, img.size, (size, size), "--size")
    except DataError as err:
        if skip_bad:
            return {"skipped": str(err)}
        raise DataError(f"{err} (use --skip-bad to skip bad files)") from None
    record: dict[str, Any] = {"name": src.stem, "source": src.name, "source_sha256": file_sha256(src)}
    if face is None:
        hr = fit_hr(img, size, fit)
    else:
        hr, points = fit_face(img, face, size, fit)
        record["landmarks"] = points.round(4).tolist()
    small, up = degrade(hr, scale, kernel)
    for sub, image in zip(SUBDIRS, (hr, small, up)):
        path = out / sub / f"{src.stem}.png"
        try:
            image.save(path, format="PNG")
        except OSError as err:
            raise DataError(f"--out: {os_error_message(err, path)}") from None
        record[sub] = f"{sub}/{path.name}"
        record[f"{sub}_sha256"] = file_sha256(path)
    return record


def _prepare_outdir(out: Path, overwrite: bool) -> None:
    try:
        _make_outdir(out, overwrite)
    except OSError as err:
        raise DataError(f"--out {str(out)!r}: {os_error_message(err)}") from None


def _make_outdir(out: Path, overwrite: bool) -> None:
    used = [
        p
        for p in (out / d for d in (*SUBDIRS, MANIFEST, LANDMARKS))
        if p.is_file() or (p.is_dir() and any(p.iterdir()))
    ]
    if used and not overwrite:
        raise DataError(
            f"output folder {str(out)!r} already has {', '.join(p.name for p in used)}; "
            "use --overwrite to replace them or choose another --out"
        )
    for path in used:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for sub in SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)


def prepare(
    src: str | Path,
    out: str | Path,
    size: int = 128,
    scale: int = 8,
    fit: str = "center_crop",
    kernel: str = "pil",
    skip_bad: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    landmarks: str | Path | None = None,
) -> dict[str, Any]:
    """Build OUT/HR, OUT/LR, OUT/LR_up and OUT/manifest.json (and OUT/landmarks.json with
    ``landmarks``) from the images in ``src``; returns the manifest."""
    src, out = Path(src), Path(out)
    if size < 1 or scale < 1 or size % scale:
        raise DataError(f"--size {size} must be a positive multiple of --scale {scale}")
    if fit not in FITS or kernel not in KERNELS:
        raise DataError(f"--fit must be one of {list(FITS)} and --kernel one of {list(KERNELS)}")
    files = list_images(src, "--src folder")
    index_by_stem(files, f"--src folder {str(src)!r}")
    if not skip_bad:  # fail on unreadable headers / small images before writing anything
        scan(
            files,
            minimum=(size, size),
            key="--size",
            skip_bad=False,
            skip_hint="use --skip-bad",
            what=f"--src folder {str(src)!r}",
        )
    marks = read_landmarks(landmarks) if landmarks is not None else None
    faces = _faces(marks, files) if marks is not None else [None] * len(files)
    _prepare_outdir(out, overwrite)
    jobs = [(f, out, size, scale, fit, kernel, skip_bad, face) for f, face in zip(files, faces)]
    records, skipped = [], []
    try:
        with Pool(workers) if workers > 1 else _Inline() as pool:
            results = pool.imap(_prepare_one, jobs, chunksize=8)
            for job, result in zip(jobs, tqdm(results, total=len(jobs), desc="prepare", disable=None)):
                if "skipped" in result:
                    skipped.append({"source": job[0].name, "reason": result["skipped"]})
                else:
                    records.append(result)
    except BaseException:
        for sub in SUBDIRS:  # no half-written output: these folders were empty or replaced
            shutil.rmtree(out / sub, ignore_errors=True)
        raise
    if skipped:
        log.warning("skipped %d bad file(s) of %d in %s", len(skipped), len(files), src)
        for item in skipped:
            log.warning("  %s: %s", item["source"], item["reason"])
    if not records:
        raise DataError(f"--src folder {str(src)!r}: no usable image among {len(files)} file(s)")
    manifest = {
        "source_dir": str(src.resolve()),
        "size": size,
        "scale": scale,
        "lr_size": size // scale,
        "fit": fit,
        "kernel": kernel,
        "count": len(records),
        "files": records,
        "skipped": skipped,
    }
    if marks is not None:
        manifest["landmarks"] = {"source": str(Path(landmarks).resolve()), "file": LANDMARKS}
        points = {r["name"]: r.pop("landmarks") for r in records}
        _write(out / LANDMARKS, {"format": JSON_FORMAT, "size": [size, size], "points": points})
    _write(out / MANIFEST, manifest)
    log.info("wrote %d image(s) x3 to %s (%d skipped)", len(records), out, len(skipped))
    return manifest


def _faces(marks: LandmarkSet, files: list[Path]) -> list[Landmarks]:
    """Each source image's landmarks in its own pixels (a landmarks JSON of another size is rescaled)."""
    marks.check_covers([f.stem for f in files], "--landmarks: the file")
    if marks.frame == "source":
        return [marks.get(f.stem) for f in files]
    return [Landmarks(hr_points(marks, f.stem, open_header(f))) for f in files]


def _write(path: Path, data: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(data, indent=1) + "\n")
    except OSError as err:
        raise DataError(f"--out: {os_error_message(err, path)}") from None


class _Inline:
    """Single-process stand-in for ``multiprocessing.Pool`` (same ``imap`` interface)."""

    def __enter__(self) -> _Inline:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def imap(fn: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        return map(fn, items)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", required=True, help="folder of raw face photos (not recursive)")
    parser.add_argument("--out", required=True, help="output folder (HR/, LR/, LR_up/, manifest.json)")
    parser.add_argument("--size", type=int, default=128, help="HR side in pixels (default 128)")
    parser.add_argument("--scale", type=int, default=8, help="downscaling factor (default 8)")
    parser.add_argument("--fit", choices=FITS, default="center_crop", help="square crop then resize, or resize")
    parser.add_argument("--kernel", choices=KERNELS, default="pil", help="bicubic of PIL (default) or MATLAB")
    parser.add_argument("--landmarks", default=None, help="landmark file of --src (DIC .pkl, CelebA txt, JSON)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable / too small images (logged)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing HR/LR/LR_up/manifest in --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare(
            args.src,
            args.out,
            size=args.size,
            scale=args.scale,
            fit=args.fit,
            kernel=args.kernel,
            skip_bad=args.skip_bad,
            workers=args.workers,
            overwrite=args.overwrite,
            landmarks=args.landmarks,
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
