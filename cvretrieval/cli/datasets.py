"""``cvret datasets``: check a layout, download a benchmark, make a copy-detection set."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from ._common import Output, common_options


@main.group("datasets")
def datasets_group() -> None:
    """Data sets: check a layout, download a public benchmark, make a copy-detection set."""


@datasets_group.command("check")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--format", "fmt", default=None,
              help="Force a dataset layout, e.g. query-gallery (default: detect).")
@click.option("--protocol", type=click.Choice(["easy", "medium", "hard"]), default=None)
@click.option("--cache", "data_cache", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where images extracted from TFRecords go.")
@click.option("--no-decode", is_flag=True,
              help="Parse image headers only instead of decoding every image (faster).")
@click.option("--no-duplicates", is_flag=True, help="Skip the content-hash duplicate search.")
@common_options
def datasets_check(path: Path, fmt: str | None, protocol: str | None, data_cache: Path | None,
                   no_decode: bool, no_duplicates: bool, out: Output) -> None:
    """Validate and summarise the data set at PATH (any supported layout).

    Exits with status 1 when a file is missing, unreadable or duplicated, a query box
    is empty, inverted or outside its image, or the reader skipped a file.
    """
    from ..datasets import check_dataset, format_check

    report = check_dataset(path, format=fmt, decode=not no_decode, protocol=protocol,
                           cache_dir=data_cache, duplicates=not no_duplicates,
                           progress=out.progress)
    out.text(format_check(report))
    out.result(report)
    if not report["ok"]:
        raise SystemExit(1)  # the report is printed: no further message


@datasets_group.command("list")
@common_options
def datasets_list(out: Output) -> None:
    """The public benchmarks `cvret datasets fetch` can download."""
    from ..fetch import list_datasets

    rows = list_datasets()
    for r in rows:
        verified = "checksum" if r.get("verified") else "no published checksum"
        out.text(f"{r['name']:<12} {r.get('approx_size', '?'):>8}  {r.get('title', '')} "
                 f"({verified})")
    out.result(rows)


@datasets_group.command("fetch")
@click.argument("name")
@click.option("--to", "to", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder to download and extract into.")
@click.option("--base-url", default=None, envvar="CVRET_FETCH_BASE_URL",
              help="Fetch from a mirror with the same paths (env CVRET_FETCH_BASE_URL).")
@click.option("--allow-unverified", is_flag=True,
              help="Accept files that have no published checksum (their hash is recorded).")
@click.option("--keep-archives", is_flag=True, help="Keep the downloaded archives.")
@click.option("--force", is_flag=True, help="Download and extract again.")
@common_options
def datasets_fetch(name: str, to: Path, base_url: str | None, allow_unverified: bool,
                   keep_archives: bool, force: bool, out: Output) -> None:
    """Download the public benchmark NAME (see `cvret datasets list`) into --to."""
    from ..fetch import dataset_info, fetch_dataset

    path = fetch_dataset(name, to, base_url=base_url, progress=out.progress is not False,
                         allow_unverified=allow_unverified, keep_archives=keep_archives,
                         force=force)
    if dataset_info(name).get("format") == "distractors":
        out.text(f"{name} is ready: distractor images in {path} (no queries: index them "
                 "together with a benchmark's gallery)")
    else:
        out.text(f"{name} is ready: cvret eval {path}")
    out.result({"name": name, "path": str(path)})


@datasets_group.command("make-copies")
@click.argument("photos", type=click.Path(path_type=Path, exists=True))
@click.argument("output", type=click.Path(path_type=Path, file_okay=False))
@click.option("--queries", "n_queries", type=click.IntRange(1), default=None,
              help="Photos used as queries (default: all not used as distractors).")
@click.option("--copies", "copies_per_query", type=click.IntRange(1), default=4, show_default=True,
              help="Attacked copies per query.")
@click.option("--distractors", "n_distractors", type=click.IntRange(0), default=None,
              help="Photos used as distractors (default: all not used as queries).")
@click.option("--attacks", default="crop,rotate,perspective,photometric,jpeg", show_default=True)
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--strength", type=click.Choice(["default", "harsh"]), default="default",
              show_default=True, help="harsh: 55-75%% crops, 10-30 deg rotations, every copy "
              "downscaled 0.45-0.65 and saved at JPEG quality 12-25.")
@common_options
def datasets_make_copies(photos: Path, output: Path, n_queries: int | None, copies_per_query: int,
                         n_distractors: int | None, attacks: str, max_side: int, seed: int,
                         strength: str, out: Output) -> None:
    """Build a Copydays-style benchmark from PHOTOS into OUTPUT (copies, distractors, gt.json)."""
    from ..copies import make_copies
    from ..io import list_images

    paths = list_images(photos) if photos.is_dir() else [photos]
    if not paths:
        raise click.ClickException(f"no images under {photos}")
    gt = make_copies(paths, output, n_queries=n_queries, copies_per_query=copies_per_query,
                     n_distractors=n_distractors,
                     attacks=[a.strip() for a in attacks.split(",") if a.strip()],
                     max_side=max_side, seed=seed, strength=strength)
    info = json.loads((output / "copies.json").read_text())
    out.text(f"wrote {gt}: evaluate it with `cvret eval {gt}`")
    out.result({"gt": str(gt), **info})


