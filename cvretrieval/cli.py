"""The ``cvret`` command: a thin click layer over the library.

Every command takes ``--json PATH`` (``-`` for standard output, then nothing else is
printed there), ``-v`` (more detail, tracebacks) and ``-q`` (errors only). Library
errors become one-line messages with exit code 1.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import CVRetrievalError

logger = logging.getLogger("cvretrieval")

FEATURE_HELP = ("Embedder: hog, bovw[-DET], vlad[-DET], onnx:MODEL, tflite:MODEL, "
                "torchscript:MODEL, siamese:DIR, or a plug-in (see `cvret embedders`).")


# --- shared options ---------------------------------------------------------------------
def _setup_logging(verbose: int, quiet: bool) -> None:
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    level = logging.ERROR if quiet else levels[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``, ``-v`` and ``-q`` on every command, and errors turned into one line."""

    @click.option("--json", "json_path", metavar="PATH", default=None,
                  help="Write the machine-readable result to PATH ('-' = standard output).")
    @click.option("-v", "--verbose", count=True,
                  help="More detail; -vv for debug; tracebacks on errors.")
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
        click.option("--features", "features", default="bovw", show_default=True,
                     help=FEATURE_HELP),
        click.option("--detector", type=click.Choice(["sift", "rootsift", "orb", "akaze", "brisk"]),
                     default=None, help="Local detector for bovw/vlad (default sift / rootsift)."),
        click.option("--words", "n_words", type=click.IntRange(2), default=None,
                     help="Vocabulary size for bovw/vlad (default 1000 / 64)."),
        click.option("--n-features", type=click.IntRange(1), default=None,
                     help="Key points per image (default 1000)."),
        click.option("--max-descriptors", type=click.IntRange(1), default=None,
                     help="Descriptors sampled to fit the vocabulary (default 100000)."),
        click.option("--vocab", "vocab_dir",
                     type=click.Path(path_type=Path, exists=True, file_okay=False),
                     default=None, help="Use a vocabulary built by `cvret vocab build`."),
        click.option("--index", "index_spec", default="flat", show_default=True,
                     help="flat, ivf, lsh, pq, hnsw or any Faiss factory string."),
        click.option("--metric", type=click.Choice(["ip", "l2"]), default="ip", show_default=True),
        click.option("--max-side", type=click.IntRange(16), default=640, show_default=True,
                     help="Downscale images so their long side is at most this."),
        click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS",
                     help="Worker processes (-1 = all cores)."),
        click.option("--random-state", type=int, default=0, show_default=True),
        click.option("--pca-whiten", type=click.IntRange(1), default=None, metavar="D",
                     help="Learn a PCA-whitening on the indexed images, keep D dimensions."),
        click.option("--whiten-shrinkage", type=click.FloatRange(0, 1), default=0.5,
                     show_default=True, help="Eigenvalue shrinkage (0 = full whitening)."),
        click.option("--dba", type=click.IntRange(0), default=0, show_default=True, metavar="K",
                     help="Database-side augmentation with K neighbours (0 = off)."),
        click.option("--rerank", default=None, metavar="STEPS",
                     help="Re-ranking: sv (spatial verification), qe (query expansion), sv,qe."),
        click.option("--qe-k", type=click.IntRange(0), default=5, show_default=True,
                     help="Top results that expand a query."),
        click.option("--qe-alpha", type=float, default=3.0, show_default=True,
                     help="alpha-QE exponent (0 = average query expansion)."),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Any other embedder parameter, e.g. --param pooling=gem --param "
                          "input_size=224 (repeatable; see `cvret embedders`)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    """``--param KEY=VALUE`` pairs; values are read as JSON when they parse, else as text."""
    params: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key.strip().replace("-", "_")] = json.loads(raw)
        except ValueError:
            params[key.strip().replace("-", "_")] = raw
    return params


def _make_embedder(features: str, detector: str | None, n_words: int | None,
                   n_features: int | None, max_descriptors: int | None, vocab_dir: Path | None,
                   random_state: int, params: tuple[str, ...] = ()) -> Any:
    """An embedder from the command's options: only the options given are passed on, so the
    embedder's own defaults apply and an option it does not take is a one-line error."""
    import inspect

    from .embedders import embedder_class, make_embedder, parse_spec

    given: dict[str, Any] = {"detector": detector, "n_words": n_words, "n_features": n_features,
                             "max_descriptors": max_descriptors,
                             "vocabulary": str(vocab_dir) if vocab_dir else None}
    given.update(_parse_params(params))
    name, _ = parse_spec(features)
    accepted = inspect.signature(embedder_class(name).__init__).parameters
    if "random_state" in accepted and "random_state" not in given:
        given["random_state"] = random_state
    flags = {"detector": "--detector", "n_words": "--words", "n_features": "--n-features",
             "max_descriptors": "--max-descriptors", "vocabulary": "--vocab"}
    unused = [flags[k] for k, v in given.items()
              if v is not None and k in flags and k not in accepted]
    if unused:
        raise click.UsageError(f"{', '.join(unused)} do not apply to {features!r} features")
    return make_embedder(features, **given)


def _make_retriever(features: str, detector: str | None, n_words: int | None,
                    n_features: int | None, max_descriptors: int | None, vocab_dir: Path | None,
                    index_spec: str, metric: str, max_side: int, n_jobs: int, random_state: int,
                    params: tuple[str, ...] = (), **extra: Any) -> Any:
    from .retriever import Retriever

    embedder = _make_embedder(features, detector, n_words, n_features, max_descriptors, vocab_dir,
                              random_state, params)
    from .retriever import parse_rerank

    extra["rerank"] = parse_rerank(extra.get("rerank"))
    if extra.get("qe_alpha") == 0:
        extra["qe_alpha"] = None  # plain average query expansion
    return Retriever(embedder, index=index_spec, metric=metric, max_side=max_side, n_jobs=n_jobs,
                     random_state=random_state, **extra)


def _print_failures(out: Output, run: dict[str, Any]) -> None:
    if run.get("skipped"):
        out.text(f"skipped {run['skipped']} unreadable image(s):", err=True)
        for f in run["failed"][:20]:
            out.text(f"  {f['error']}", err=True)
        if run["skipped"] > 20:
            out.text(f"  ... and {run['skipped'] - 20} more (see --json output or the catalog)",
                     err=True)


def _parse_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    try:
        parts = [float(v) for v in value.replace(" ", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4:
        raise click.BadParameter(f"{value!r} is not x0,y0,x1,y1 (four numbers)",
                                 param_hint="--bbox")
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
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Vocabulary folder.")
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
    from .retriever import Retriever

    box = _parse_bbox(bbox)
    ret = Retriever.load(bundle, n_jobs=1)
    hits = ret.search(query, k=k, bbox=box, rerank=rerank)
    for h in hits:
        out.text(f"{h.rank:>4}  {h.score:8.4f}  {h.path}")
    out.result([{"rank": h.rank, "path": h.path, "score": h.score} for h in hits])


def _write_report(out: Output, result: dict[str, Any], data: Any, report_dir: Path | None,
                  report_png: Path | None) -> None:
    if report_dir is None:
        if report_png is not None:
            raise click.UsageError("--report-png needs --report DIR")
        return
    from .report import write_report

    page = write_report(result, data, report_dir)
    out.text(f"report: {page}")
    if report_png is not None:
        from .render import render_html_to_png

        out.text(f"report image: {render_html_to_png(page, report_png)}")


report_options = [
    click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
                 default=None, help="Write an HTML report (index.html) into this folder."),
    click.option("--report-png", type=click.Path(path_type=Path, dir_okay=False), default=None,
                 help="Also render the report to this PNG (needs Chromium)."),
]


def _stack(options: list[Callable[..., Any]]) -> Callable[..., Any]:
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@main.command("eval")
@click.argument("dataset", type=click.Path(path_type=Path, exists=True))
@click.option("--format", "fmt", default=None, help="Force a dataset layout (default: detect).")
@click.option("-k", "k", type=click.IntRange(1), default=None,
              help="Rank only the top k (default: all).")
@click.option("--protocol", type=click.Choice(["easy", "medium", "hard"]), default=None,
              help="Revisited Oxford/Paris protocol (default medium; E/M/H are all reported).")
@click.option("--cache", "data_cache", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where images extracted from TFRecords go.")
@click.option("--vectors", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None,
              help="Score precomputed embeddings (.npz with gallery, queries[, metric]) instead of "
                   "building a retriever.")
@_stack(report_options)
@embedder_options
@common_options
def eval_cmd(dataset: Path, fmt: str | None, k: int | None, protocol: str | None,
             data_cache: Path | None, vectors: Path | None, report_dir: Path | None,
             report_png: Path | None, out: Output, **options: Any) -> None:
    """Score DATASET's queries against its gallery (mAP, P@k, N-S, ...).

    Builds a retriever with the given features, or scores the precomputed --vectors of any
    model (a Keras, TensorFlow or PyTorch model trained elsewhere).
    """
    from .datasets import load_dataset
    from .evaluation import evaluate, format_metrics_table

    data = load_dataset(dataset, format=fmt, protocol=protocol, cache_dir=data_cache)
    if vectors is not None:
        from .evaluation import evaluate_vectors, load_vectors_npz

        gallery, queries, metric = load_vectors_npz(vectors, data)
        report = evaluate_vectors(gallery, queries, data, metric=metric or options["metric"], k=k,
                                  source=str(vectors))
        what = f"vectors {vectors}"
    else:
        ret = _make_retriever(**options)
        ret.build(data.image_paths(), progress=out.progress)
        _print_failures(out, ret.last_run_)
        report = evaluate(ret, data, k=k, progress=out.progress)
        report["build"] = {key: v for key, v in ret.last_run_.items() if key != "failed"}
        what = f"features {options['features']}, index {options['index_spec']}"
    out.text(f"{data.name or dataset}: {len(data.qimlist)} queries, {len(data.imlist)} images, "
             f"{what}")
    out.text(format_metrics_table(report["metrics"]))
    _write_report(out, report, data, report_dir, report_png)
    out.result(report)


@main.command("bench")
@click.argument("dataset", type=click.Path(path_type=Path, exists=True))
@click.option("--format", "fmt", default=None, help="Force a dataset layout (default: detect).")
@click.option("--features", "feature_list", default="hog,bovw-orb,bovw-sift", show_default=True,
              help="Comma-separated embedder specs to compare.")
@click.option("--index", "index_spec", default="flat", show_default=True)
@click.option("--metric", type=click.Choice(["ip", "l2"]), default="ip", show_default=True)
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None,
              help="Keep extracted local features here (default: a temporary folder, removed).")
@click.option("--pca-whiten", type=click.IntRange(1), default=None, metavar="D")
@click.option("--dba", type=click.IntRange(0), default=0, metavar="K")
@click.option("--rerank", default=None, metavar="STEPS", help="sv, qe or sv,qe for every config.")
@click.option("--qe-k", type=click.IntRange(0), default=5, show_default=True)
@click.option("--protocol", type=click.Choice(["easy", "medium", "hard"]), default=None)
@common_options
def bench_cmd(dataset: Path, fmt: str | None, feature_list: str, index_spec: str, metric: str,
              max_side: int, n_jobs: int, random_state: int, cache_dir: Path | None,
              pca_whiten: int | None, dba: int, rerank: str | None, qe_k: int,
              protocol: str | None, out: Output) -> None:
    """Evaluate several embedders on DATASET in one run: one table of quality and seconds.

    Local features are extracted once per detector and shared between configurations
    (bovw-sift and vlad-sift reuse the same SIFT key points).
    """
    import tempfile

    from .bench import run_bench
    from .datasets import load_dataset
    from .retriever import parse_rerank

    data = load_dataset(dataset, format=fmt, protocol=protocol)
    specs = [f.strip() for f in feature_list.split(",") if f.strip()]
    options = {"pca_whiten": pca_whiten, "dba": dba, "rerank": parse_rerank(rerank), "qe_k": qe_k}
    with tempfile.TemporaryDirectory(prefix="cvret-bench-") as tmp:
        result = run_bench(data, specs, index=index_spec, metric=metric, max_side=max_side,
                           n_jobs=n_jobs, random_state=random_state,
                           feature_cache=cache_dir or Path(tmp), retriever_options=options,
                           progress=out.progress)
    out.text(f"{data.name or dataset}: {len(data.qimlist)} queries, {len(data.imlist)} images, "
             f"index {index_spec}")
    out.text(result["table"])
    out.result(result)


@main.group("datasets")
def datasets_group() -> None:
    """Data sets: check a layout, download a public benchmark, make a copy-detection set."""


@datasets_group.command("check")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--format", "fmt", default=None, help="Force a dataset layout (default: detect).")
@click.option("--protocol", type=click.Choice(["easy", "medium", "hard"]), default=None)
@click.option("--cache", "data_cache", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where images extracted from TFRecords go.")
@click.option("--no-decode", is_flag=True,
              help="Parse image headers only instead of decoding every image (faster).")
@click.option("--no-duplicates", is_flag=True, help="Skip the content-hash duplicate search.")
@common_options
def datasets_check(path: Path, fmt: str | None, protocol: str | None, data_cache: Path | None,
                   no_decode: bool, no_duplicates: bool, out: Output) -> None:
    """Validate and summarise the data set at PATH (any supported layout)."""
    from .datasets import check_dataset, format_check

    report = check_dataset(path, format=fmt, decode=not no_decode, protocol=protocol,
                           cache_dir=data_cache, duplicates=not no_duplicates,
                           progress=out.progress)
    out.text(format_check(report))
    out.result(report)


@datasets_group.command("list")
@common_options
def datasets_list(out: Output) -> None:
    """The public benchmarks `cvret datasets fetch` can download."""
    from .fetch import list_datasets

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
    from .fetch import fetch_dataset

    path = fetch_dataset(name, to, base_url=base_url, progress=out.progress is not False,
                         allow_unverified=allow_unverified, keep_archives=keep_archives,
                         force=force)
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
@common_options
def datasets_make_copies(photos: Path, output: Path, n_queries: int | None, copies_per_query: int,
                         n_distractors: int | None, attacks: str, max_side: int, seed: int,
                         out: Output) -> None:
    """Build a Copydays-style benchmark from PHOTOS into OUTPUT (copies, distractors, gt.json)."""
    from .copies import make_copies
    from .io import list_images

    paths = list_images(photos) if photos.is_dir() else [photos]
    if not paths:
        raise click.ClickException(f"no images under {photos}")
    gt = make_copies(paths, output, n_queries=n_queries, copies_per_query=copies_per_query,
                     n_distractors=n_distractors,
                     attacks=[a.strip() for a in attacks.split(",") if a.strip()],
                     max_side=max_side, seed=seed)
    info = json.loads((output / "copies.json").read_text())
    out.text(f"wrote {gt}: evaluate it with `cvret eval {gt}`")
    out.result({"gt": str(gt), **info})


@main.group("train")
def train_group() -> None:
    """Train models on labelled images (extra `siamese`: PyTorch)."""


@train_group.command("siamese")
@click.argument("dataset", type=click.Path(path_type=Path, exists=True))
@click.option("--base", default="mobilenet", show_default=True,
              help="Frozen base embedder spec (tflite:MODEL, hog, bovw-sift, vlad, ...); "
                   "'mobilenet' = the file named by $CVRET_MOBILENET.")
@click.option("--loss", type=click.Choice(["triplet", "contrastive"]), default="triplet",
              show_default=True)
@click.option("--margin", type=float, default=None, help="Loss margin (default: per loss).")
@click.option("--mining", type=click.Choice(["batch-hard", "semi-hard", "random"]),
              default="batch-hard", show_default=True)
@click.option("--head", default="512,256", show_default=True,
              help="Hidden and output sizes of the projection head.")
@click.option("--plain", is_flag=True,
              help="A plain MLP head instead of the residual one initialised at the base.")
@click.option("--mix", default="auto", show_default=True,
              help="Weight of the head against the base embedding (0-1), or auto (validation).")
@click.option("--center", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True, help="Centre the base on the training mean.")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="Epochs (default 30 for a head, 10 with --backbone).")
@click.option("--patience", type=click.IntRange(1), default=None,
              help="Stop after this many epochs without a better validation mAP "
                   "(default 10 for a head, 3 with --backbone).")
@click.option("--batch-p", type=click.IntRange(2), default=None,
              help="Classes per batch (default 16 for a head, 8 with --backbone).")
@click.option("--batch-k", type=click.IntRange(2), default=4, show_default=True,
              help="Images per class in a batch.")
@click.option("--lr", type=float, default=None, help="Learning rate (default: per loss).")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--val-split", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
              help="Fraction of the classes held out for validation (early stopping).")
@click.option("--backbone",
              type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]),
              default=None,
              help="Fine-tune this CNN end to end with GeM pooling instead of training a head "
                   "on a frozen base (--base, --head, --plain, --mix, --center unused).")
@click.option("--weights", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None,
              help="--backbone weights: a torchvision-style state dict file (never downloaded).")
@click.option("--input-size", type=click.IntRange(32), default=224, show_default=True,
              help="--backbone: square input size.")
@click.option("--freeze", type=click.IntRange(0, 5), default=3, show_default=True,
              help="--backbone: first stages kept frozen (stem, layer1..layer4).")
@click.option("--dim", type=click.IntRange(1), default=None,
              help="--backbone: output dimension (default the trunk's channels).")
@click.option("--steps-per-epoch", type=click.IntRange(1), default=None,
              help="--backbone: batches per epoch (default one pass over the images).")
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where base embeddings are cached (default: in the model folder).")
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Model folder (use it as --features siamese:FOLDER).")
@common_options
def train_siamese_cmd(dataset: Path, base: str, loss: str, margin: float | None, mining: str,
                      head: str, plain: bool, mix: str, center: str, epochs: int | None,
                      patience: int | None, batch_p: int | None, batch_k: int,
                      lr: float | None, weight_decay: float, val_split: float,
                      backbone: str | None, weights: Path | None, input_size: int, freeze: int,
                      dim: int | None, steps_per_epoch: int | None, max_side: int,
                      cache_dir: Path | None, n_jobs: int, random_state: int, output: Path,
                      out: Output) -> None:
    """Train a Siamese projection head over a frozen embedder on DATASET's classes.

    Base embeddings are computed once and cached; the best epoch by validation mAP on
    held-out classes is kept; the head is saved as ONNX, so `--features siamese:OUTPUT`
    runs without PyTorch. With --backbone, a ResNet with GeM pooling is fine-tuned end to
    end instead (weights from --weights) and saved as ONNX the same way.
    """
    from .siamese.train import train_siamese

    try:
        sizes = tuple(int(v) for v in head.split(",") if v.strip())
        mix_value: str | float = mix if mix == "auto" else float(mix)
    except ValueError:
        raise click.UsageError(
            "--head takes sizes like 512,256 and --mix a number or auto"
        ) from None
    centres: dict[str, str | bool] = {"auto": "auto", "yes": True, "no": False}
    centre = centres[center]
    result = train_siamese(dataset, base=base, loss=loss, margin=margin, mining=mining,
                           head=sizes, residual=not plain, mix=mix_value, center=centre,
                           epochs=epochs, patience="auto" if patience is None else patience,
                           batch_p=batch_p, batch_k=batch_k,
                           lr=lr, weight_decay=weight_decay, val_split=val_split,
                           max_side=max_side, random_state=random_state, out_dir=output,
                           cache_dir=cache_dir, progress=out.progress, n_jobs=n_jobs,
                           backbone=backbone, weights=weights, input_size=input_size,
                           freeze=freeze, dim=dim, steps_per_epoch=steps_per_epoch)
    out.text(f"model written to {output}: validation mAP {result.get('val_mAP', 0):.4f} "
             f"(base {result.get('base_val_mAP', 0):.4f}, best epoch {result.get('best_epoch')}); "
             f"use it with --features siamese:{output}")
    out.result(result)


@main.command("serve")
@click.argument("bundles", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the demo to the network (no authentication).")
@click.option("--port", type=click.IntRange(1, 65535), default=8501, show_default=True)
@click.option("--report", "report_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Folder with index.html from `cvret eval --report`.")
@click.option("--max-upload-mb", type=click.IntRange(1), default=20, show_default=True)
@click.option("--browser/--no-browser", default=False, help="Open a browser tab.")
@common_options
def serve_cmd(bundles: tuple[Path, ...], host: str, port: int, report_dir: Path | None,
              max_upload_mb: int, browser: bool, out: Output) -> None:
    """Serve a web page that searches BUNDLE(s) by a region of an image (extra `web`)."""
    from .web import serve

    out.text(f"serving {len(bundles)} bundle(s) on http://{host}:{port} (Ctrl-C stops)")
    code = serve(list(bundles), host=host, port=port, report=report_dir,
                 headless=not browser, max_upload_mb=max_upload_mb)
    if code:
        raise click.ClickException(f"the web server stopped with exit status {code}")


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
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
              envvar="CVRET_CACHE",
              help="Where the demo data and results go "
                   "(default: the user cache dir; env CVRET_CACHE).")
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
