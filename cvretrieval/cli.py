"""The ``cvret`` command: a thin click layer over the library.

Every command takes ``--json PATH`` (``-`` for standard output, then nothing else is
printed there), ``-v`` (more detail, tracebacks) and ``-q`` (errors only). Library
errors become one-line messages with exit code 1.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import CVRetrievalError

logger = logging.getLogger("cvretrieval")

FEATURE_HELP = "Embedder: hog, bovw, bovw-orb, bovw-sift, bovw-rootsift, ... (see `cvret embedders`)."


# --- shared options ---------------------------------------------------------------------
def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, ``-v`` and ``-q`` on every command, and errors turned into one line."""

    @click.option("--json", "json_path", metavar="PATH", default=None,
                  help="Write the machine-readable result to PATH ('-' = standard output).")
    @click.option("-v", "--verbose", count=True, help="More detail; -vv for debug; tracebacks on errors.")
    @click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
    @functools.wraps(f)
    def wrapper(*args: Any, json_path: str | None, verbose: int, quiet: bool, **kwargs: Any) -> Any:
        _setup_logging(verbose, quiet)
        out = Output(json_path, quiet)
        try:
            return f(*args, out=out, **kwargs)
        except (CVRetrievalError, ValueError, OSError, TypeError, RuntimeError) as exc:
            if verbose:
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise click.ClickException(message) from None

    return wrapper


class Output:
    """Where a command's text and JSON go."""

    def __init__(self, json_path: str | None, quiet: bool) -> None:
        self.json_path = json_path
        self.quiet = quiet

    @property
    def progress(self) -> bool | None:
        return False if self.quiet or self.json_path == "-" else None

    def text(self, message: str = "", err: bool = False) -> None:
        """Human-readable output; goes to stderr when stdout is reserved for JSON."""
        if self.quiet and not err:
            return
        click.echo(message, err=err or self.json_path == "-")

    def result(self, data: Any) -> None:
        if not self.json_path:
            return
        payload = json.dumps(data, indent=2, default=str)
        if self.json_path == "-":
            click.echo(payload)
        else:
            Path(self.json_path).parent.mkdir(parents=True, exist_ok=True)
            Path(self.json_path).write_text(payload + "\n")


def embedder_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose and configure an embedder and an index (index, eval, demo)."""
    options = [
        click.option("--features", "features", default="bovw", show_default=True, help=FEATURE_HELP),
        click.option("--detector", type=click.Choice(["sift", "rootsift", "orb", "akaze", "brisk"]),
                     default=None, help="Local detector for bovw (default sift)."),
        click.option("--words", "n_words", type=click.IntRange(2), default=None,
                     help="Vocabulary size for bovw (default 1000)."),
        click.option("--n-features", type=click.IntRange(1), default=None,
                     help="Key points per image (default 1000)."),
        click.option("--max-descriptors", type=click.IntRange(1), default=None,
                     help="Descriptors sampled to fit the vocabulary (default 100000)."),
        click.option("--vocab", "vocab_dir", type=click.Path(path_type=Path, exists=True, file_okay=False),
                     default=None, help="Use a vocabulary built by `cvret vocab build`."),
        click.option("--index", "index_spec", default="flat", show_default=True,
                     help="flat, ivf, lsh, pq, hnsw or any Faiss factory string."),
        click.option("--metric", type=click.Choice(["ip", "l2"]), default="ip", show_default=True),
        click.option("--max-side", type=click.IntRange(16), default=640, show_default=True,
                     help="Downscale images so their long side is at most this."),
        click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS",
                     help="Worker processes (-1 = all cores)."),
        click.option("--random-state", type=int, default=0, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _make_retriever(features: str, detector: str | None, n_words: int | None, n_features: int | None,
                    max_descriptors: int | None, vocab_dir: Path | None, index_spec: str, metric: str,
                    max_side: int, n_jobs: int, random_state: int) -> Any:
    from .embedders import make_embedder
    from .retriever import Retriever

    params: dict[str, Any] = {}
    if features.lower().startswith("bovw"):
        params = {"detector": detector, "n_words": n_words, "n_features": n_features,
                  "max_descriptors": max_descriptors, "random_state": random_state,
                  "vocabulary": str(vocab_dir) if vocab_dir else None}
    else:
        given = {"--detector": detector, "--words": n_words, "--n-features": n_features,
                 "--vocab": vocab_dir, "--max-descriptors": max_descriptors}
        used = [name for name, value in given.items() if value is not None]
        if used:
            raise click.UsageError(f"{', '.join(used)} only apply to bovw features, not {features!r}")
    embedder = make_embedder(features, **params)
    return Retriever(embedder, index=index_spec, metric=metric, max_side=max_side, n_jobs=n_jobs,
                     random_state=random_state)


def _print_failures(out: Output, run: dict[str, Any]) -> None:
    if run.get("skipped"):
        out.text(f"skipped {run['skipped']} unreadable image(s):", err=True)
        for f in run["failed"][:20]:
            out.text(f"  {f['error']}", err=True)
        if run["skipped"] > 20:
            out.text(f"  ... and {run['skipped'] - 20} more (see --json output or the catalog)", err=True)


def _parse_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.replace(" ", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4:
        raise click.BadParameter(f"{value!r} is not x0,y0,x1,y1 (four numbers)", param_hint="--bbox")
    x0, y0, x1, y1 = parts
    if x1 <= x0 or y1 <= y0:
        raise click.BadParameter(f"{value!r}: need x1 > x0 and y1 > y0", param_hint="--bbox")
    return (x0, y0, x1, y1)


# --- commands ---------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cvret")
def main() -> None:
    """cvret: index, search and evaluate image collections with classical or deep features."""


@main.group()
def vocab() -> None:
    """Visual vocabularies."""


@vocab.command("build")
@click.argument("images", type=click.Path(path_type=Path, exists=True))
@click.option("--detector", type=click.Choice(["sift", "rootsift", "orb", "akaze", "brisk"]),
              default="sift", show_default=True)
@click.option("--words", "n_words", type=click.IntRange(2), default=1000, show_default=True)
@click.option("--n-features", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--max-descriptors", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Vocabulary folder.")
@common_options
def vocab_build(images: Path, detector: str, n_words: int, n_features: int, max_descriptors: int,
                max_side: int, n_jobs: int, random_state: int, output: Path, out: Output) -> None:
    """Fit a visual vocabulary on IMAGES (a folder or one file) and save it to -o."""
    from .embedders import BoVWEmbedder
    from .features.vocabulary import save_vocabulary
    from .retriever import Retriever

    emb = BoVWEmbedder(detector=detector, n_words=n_words, n_features=n_features,
                       max_descriptors=max_descriptors, random_state=random_state)
    Retriever(emb, max_side=max_side, n_jobs=n_jobs, random_state=random_state).fit(
        images, progress=out.progress)
    save_vocabulary(emb.vocabulary_, output)
    out.text(f"vocabulary of {emb.vocabulary_.n_words} {detector} words written to {output}")
    out.result({"vocabulary": str(output), "detector": detector, "n_words": int(emb.vocabulary_.n_words)})


@main.command("index")
@click.argument("images", type=click.Path(path_type=Path, exists=True))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Bundle folder.")
@click.option("--add", is_flag=True, help="Append IMAGES to the existing bundle -o with its fitted embedder.")
@embedder_options
@common_options
def index_cmd(images: Path, output: Path, add: bool, out: Output, **options: Any) -> None:
    """Embed every image under IMAGES and write a searchable bundle to -o."""
    from .retriever import Retriever

    if add:
        if not output.exists():
            raise click.ClickException(f"{output} does not exist: build it first without --add")
        ret = Retriever.load(output, n_jobs=options["n_jobs"])
        ret.add(images, progress=out.progress)
    else:
        ret = _make_retriever(**options)
        ret.build(images, progress=out.progress)
    ret.save(output)
    run = ret.last_run_
    _print_failures(out, run)
    dup = f", {run['duplicates']} already there" if run.get("duplicates") else ""
    out.text(f"indexed {run['indexed']} of {run['images']} images{dup} in {run['seconds']:.1f} s "
             f"-> {output} ({run['total_indexed']} in total)")
    out.result({"bundle": str(output), **run, "config": ret.config()})


@main.command("search")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("query", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Results to return.")
@click.option("--bbox", default=None, metavar="x0,y0,x1,y1", help="Search only this region of the query.")
@common_options
def search_cmd(bundle: Path, query: Path, k: int, bbox: str | None, out: Output) -> None:
    """Search BUNDLE with the image QUERY; print ranked paths and scores."""
    from .retriever import Retriever

    box = _parse_bbox(bbox)
    ret = Retriever.load(bundle, n_jobs=1)
    hits = ret.search(query, k=k, bbox=box)
    for h in hits:
        out.text(f"{h.rank:>4}  {h.score:8.4f}  {h.path}")
    out.result([{"rank": h.rank, "path": h.path, "score": h.score} for h in hits])


@main.command("eval")
@click.argument("dataset", type=click.Path(path_type=Path, exists=True))
@click.option("--format", "fmt", default=None, help="Force a dataset layout (default: detect).")
@click.option("-k", "k", type=click.IntRange(1), default=None, help="Rank only the top k (default: all).")
@embedder_options
@common_options
def eval_cmd(dataset: Path, fmt: str | None, k: int | None, out: Output, **options: Any) -> None:
    """Build a retriever on DATASET's gallery and score its queries (mAP, P@k, N-S, ...)."""
    from .datasets import load_dataset
    from .evaluation import evaluate, format_metrics_table

    data = load_dataset(dataset, format=fmt)
    ret = _make_retriever(**options)
    ret.build(data.image_paths(), progress=out.progress)
    _print_failures(out, ret.last_run_)
    report = evaluate(ret, data, k=k, progress=out.progress)
    report["build"] = {key: v for key, v in ret.last_run_.items() if key != "failed"}
    out.text(f"{data.name or dataset}: {len(data.qimlist)} queries, {len(data.imlist)} images, "
             f"features {options['features']}, index {options['index_spec']}")
    out.text(format_metrics_table(report["metrics"]))
    out.result(report)


@main.command("embedders")
@common_options
def embedders_cmd(out: Output) -> None:
    """List the available embedders and why any is unavailable."""
    from .embedders import available_embedders

    table = available_embedders()
    for name, status in table.items():
        out.text(f"{name:<16} {status}")
    out.result(table)


@main.command("demo")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None, envvar="CVRET_CACHE",
              help="Where the demo data and results go (default: the user cache dir; env CVRET_CACHE).")
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@common_options
def demo_cmd(cache_dir: Path | None, n_jobs: int, out: Output) -> None:
    """Build a small benchmark from real photos and compare HOG, BoVW-ORB and BoVW-SIFT."""
    from .demo import default_cache_dir, run_demo

    cache = cache_dir or default_cache_dir()
    out.text(f"demo data and results in {cache}")
    result = run_demo(cache, n_jobs=n_jobs, progress=out.progress)
    out.text(result["table"])
    out.text(f"grid of queries and their top 5: {result['grid']}")
    out.result(result)


if __name__ == "__main__":  # pragma: no cover
    main()
