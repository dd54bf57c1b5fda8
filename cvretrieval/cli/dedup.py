"""``cvret dedup``: groups of near-duplicate images (copies, crops, re-encodings, rotations)."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from ._common import FEATURE_HELP, Output, common_options


@main.command("dedup")
@click.argument("directory", type=click.Path(path_type=Path, exists=True))
@click.option("--features", default=None, help=FEATURE_HELP + "  [default: bovw-sift]")
@click.option("--threshold", type=float, default=None,
              help="Similarity that makes two neighbours a candidate pair "
                   "(default per features; lower with verification).")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True,
              help="Neighbours searched per image.")
@click.option("--verify/--no-verify", default=None,
              help="Confirm candidates by spatial verification (default: on for bovw/vlad).")
@click.option("--min-inliers", type=click.IntRange(4), default=12, show_default=True,
              help="Homography inliers that confirm a pair.")
@click.option("--min-inlier-ratio", type=click.FloatRange(0.0, 1.0), default=0.6,
              show_default=True,
              help="Share of a pair's ratio-test matches the inliers must also reach "
                   "(rejects different pictures sharing a logo or lettering; 0 = off).")
@click.option("--index", "index_spec", default="flat", show_default=True,
              help="flat, ivf, hnsw or any Faiss factory string.")
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS",
              help="Worker processes (-1 = all cores).")
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Write an HTML page of the groups with thumbnails here.")
@common_options
def dedup(directory: Path, features: str | None, threshold: float | None, k: int,
          verify: bool | None, min_inliers: int,
          min_inlier_ratio: float, index_spec: str, max_side: int, n_jobs: int,
          random_state: int, report_dir: Path | None, out: Output) -> None:
    """Find groups of near-duplicate images in DIRECTORY (copies, crops, rotations)."""
    from ..dedup import DEFAULT_FEATURES, find_duplicates, write_dedup_report

    result = find_duplicates(directory, features or DEFAULT_FEATURES, threshold=threshold, k=k,
                             verify=verify, min_inliers=min_inliers,
                             min_inlier_ratio=min_inlier_ratio, index=index_spec,
                             max_side=max_side, n_jobs=n_jobs, random_state=random_state,
                             progress=out.progress)
    cfg = result.config
    for i, group in enumerate(result.groups, start=1):
        out.text(f"group {i} ({len(group['paths'])} images):")
        for path, score in zip(group["paths"], group["scores"], strict=True):
            out.text(f"  {score:.3f}  {path}")
    n_in = sum(len(g["paths"]) for g in result.groups)
    out.text(f"{len(result.groups)} groups, {n_in} of {cfg['images']} images, "
             f"{len(result.pairs)} pairs ({cfg['candidates']} candidates"
             f"{', spatially verified' if cfg['verify'] else ''}) in "
             f"{cfg['seconds']['total']:.1f} s")
    if result.failed:
        out.text(f"{len(result.failed)} unreadable image(s) skipped, e.g. "
                 f"{result.failed[0]['path']}: {result.failed[0]['error']}", err=True)
    if report_dir is not None:
        page = write_dedup_report(result, report_dir)
        out.text(f"report: {page}")
    out.result(result.to_dict())
