"""``cvret vocab build``, ``cvret index`` and ``cvret search``: building and searching bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import main
from ._common import (
    DETECTOR,
    Output,
    _make_retriever,
    _parse_bbox,
    _print_failures,
    common_options,
    embedder_options,
)


@main.group()
def vocab() -> None:
    """Visual vocabularies."""


@vocab.command("build")
@click.argument("images", type=click.Path(path_type=Path, exists=True))
@click.option("--detector", type=DETECTOR, default="sift", show_default=True,
              help="sift, rootsift, orb, akaze, brisk, onnx:MODEL or a plug-in's name.")
@click.option("--words", "n_words", type=click.IntRange(2), default=1000, show_default=True)
@click.option("--n-features", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--max-descriptors", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Vocabulary folder.")
@common_options
def vocab_build(images: Path, detector: str, n_words: int, n_features: int, max_descriptors: int,
                max_side: int, n_jobs: int, random_state: int, output: Path, out: Output) -> None:
    """Fit a visual vocabulary on IMAGES (a folder or one file) and save it to -o."""
    from ..embedders import BoVWEmbedder
    from ..features.vocabulary import save_vocabulary
    from ..retriever import Retriever

    emb = BoVWEmbedder(detector=detector, n_words=n_words, n_features=n_features,
                       max_descriptors=max_descriptors, random_state=random_state)
    Retriever(emb, max_side=max_side, n_jobs=n_jobs, random_state=random_state).fit(
        images, progress=out.progress)
    save_vocabulary(emb.vocabulary_, output)
    out.text(f"vocabulary of {emb.vocabulary_.n_words} {detector} words written to {output}")
    out.result({"vocabulary": str(output), "detector": detector,
                "n_words": int(emb.vocabulary_.n_words)})


@main.command("index")
@click.argument("images", type=click.Path(path_type=Path, exists=True))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Bundle folder.")
@click.option("--add", is_flag=True,
              help="Append IMAGES to the existing bundle -o with its fitted embedder.")
@embedder_options
@common_options
def index_cmd(images: Path, output: Path, add: bool, out: Output, **options: Any) -> None:
    """Embed every image under IMAGES and write a searchable bundle to -o."""
    from ..retriever import Retriever

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
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True,
              help="Results to return.")
@click.option("--bbox", default=None, metavar="x0,y0,x1,y1",
              help="Search only this region of the query.")
@click.option("--rerank", default=None, metavar="STEPS",
              help="sv, qe, sv,qe or none (default: what the bundle was built with).")
@common_options
def search_cmd(bundle: Path, query: Path, k: int, bbox: str | None, rerank: str | None,
               out: Output) -> None:
    """Search BUNDLE with the image QUERY; print ranked paths and scores."""
    from ..retriever import Retriever

    box = _parse_bbox(bbox)
    ret = Retriever.load(bundle, n_jobs=1)
    hits = ret.search(query, k=k, bbox=box, rerank=rerank)
    for h in hits:
        out.text(f"{h.rank:>4}  {h.score:8.4f}  {h.path}")
    out.result([{"rank": h.rank, "path": h.path, "score": h.score} for h in hits])


