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
    scheduler_option,
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
@scheduler_option
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Vocabulary folder.")
@common_options
def vocab_build(images: Path, detector: str, n_words: int, n_features: int, max_descriptors: int,
                max_side: int, n_jobs: int, scheduler: str | None, random_state: int,
                output: Path, out: Output) -> None:
    """Fit a visual vocabulary on IMAGES (a folder or one file) and save it to -o."""
    from ..embedders import BoVWEmbedder
    from ..features.vocabulary import save_vocabulary
    from ..retriever import Retriever

    emb = BoVWEmbedder(detector=detector, n_words=n_words, n_features=n_features,
                       max_descriptors=max_descriptors, random_state=random_state)
    Retriever(emb, max_side=max_side, n_jobs=n_jobs, scheduler=scheduler,
              random_state=random_state).fit(
        images, progress=out.progress)
    save_vocabulary(emb.vocabulary_, output)
    out.text(f"vocabulary of {emb.vocabulary_.n_words} {detector} words written to {output}")
    out.result({"vocabulary": str(output), "detector": detector,
                "n_words": int(emb.vocabulary_.n_words)})


#: options that may accompany --add: they do not change what the bundle holds
_ADD_OK = {"n_jobs", "scheduler"}


@main.command("index")
@click.argument("images", type=click.Path(path_type=Path, exists=True))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Bundle folder.")
@click.option("--add", is_flag=True,
              help="Add IMAGES to the existing bundle -o in place, with its fitted embedder.")
@embedder_options
@common_options
@click.pass_context
def index_cmd(ctx: click.Context, images: Path, output: Path, add: bool, out: Output,
              **options: Any) -> None:
    """Embed every image under IMAGES and write a searchable bundle to -o."""
    from ..retriever import Retriever

    if add:
        flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}
        given = [flags[name] for name in options if name not in _ADD_OK
                 and ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise click.UsageError(
                f"{', '.join(sorted(given))} cannot change an existing bundle: --add embeds with "
                f"the settings {output} was built with (build a new bundle to change them)")
        if not output.exists():
            raise click.ClickException(f"{output} does not exist: build it first without --add")
        ret = Retriever.load(output, n_jobs=options["n_jobs"])
        ret.scheduler = options.get("scheduler")
        ret.add(images, progress=out.progress)
    else:
        ret = _make_retriever(**options)
        ret.build(images, output=output, progress=out.progress)
    run = ret.last_run_
    _print_failures(out, run)
    dup = f", {run['duplicates']} already there" if run.get("duplicates") else ""
    out.text(f"indexed {run['indexed']} of {run['images']} images{dup} in {run['seconds']:.1f} s "
             f"-> {output} ({run['total_indexed']} in total)")
    out.result({"bundle": str(output), **run, "config": ret.config()})


@main.command("remove")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--missing", is_flag=True, help="Also remove every image whose file is gone.")
@common_options
def remove_cmd(bundle: Path, paths: tuple[Path, ...], missing: bool, out: Output) -> None:
    """Remove images (PATHS, as they were indexed) from BUNDLE; searches never return them."""
    from ..retriever import Retriever

    if not paths and not missing:
        raise click.UsageError("name the images to remove, or pass --missing")
    ret = Retriever.load(bundle, n_jobs=1)
    run = ret.remove(list(paths), missing=missing)
    for p in run["not_found"][:20]:
        out.text(f"not in the bundle: {p}", err=True)
    out.text(f"removed {run['removed']} image(s) from {bundle} ({run['total_indexed']} indexed)")
    out.result({"bundle": str(bundle), **run})


@main.command("compact")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--retrain", is_flag=True,
              help="Train the index again (IVF/PQ list counts follow the number of vectors).")
@common_options
def compact_cmd(bundle: Path, retrain: bool, out: Output) -> None:
    """Merge BUNDLE's segments into one, dropping removed images."""
    from ..retriever import Retriever

    ret = Retriever.load(bundle, n_jobs=1)
    run = ret.compact(retrain=retrain, progress=out.progress)
    out.text(f"compacted {bundle}: {run['segments_before']} segment(s) -> 1, "
             f"{run['removed_dropped']} removed image(s) dropped, "
             f"{'index retrained' if run['retrained'] else 'index kept'}")
    out.result({"bundle": str(bundle), **run})


@main.command("search")
@click.argument("bundle", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("query", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True,
              help="Results to return.")
@click.option("--bbox", default=None, metavar="x0,y0,x1,y1",
              help="Search only this region of the query.")
@click.option("--rerank", default=None, metavar="STEPS",
              help="sv, qe, sv,qe or none (default: what the bundle was built with).")
@click.option("--refine", type=click.IntRange(0), default=None, metavar="N",
              help="Re-rank the index's top N candidates by their exact stored vectors "
                   "(default: what the bundle was built with; 0 = the index's scores).")
@common_options
def search_cmd(bundle: Path, query: Path, k: int, bbox: str | None, rerank: str | None,
               refine: int | None, out: Output) -> None:
    """Search BUNDLE with the image QUERY; print ranked paths and scores."""
    from ..retriever import Retriever

    box = _parse_bbox(bbox)
    ret = Retriever.load(bundle, n_jobs=1)
    if refine is not None:
        if ret.sparse or ret.items:
            raise click.UsageError(
                f"--refine re-ranks the candidates of a Faiss index; {bundle}'s inverted file "
                "scores exactly already: leave --refine out")
        ret.index.refine = refine
    hits = ret.search(query, k=k, bbox=box, rerank=rerank)
    for h in hits:
        out.text(f"{h.rank:>4}  {h.score:8.4f}  {h.path}")
    out.result([{"rank": h.rank, "path": h.path, "score": h.score} for h in hits])


