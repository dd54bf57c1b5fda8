"""Shared pieces of the ``cvret`` commands: options, output, errors as one line."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import CVRetrievalError

logger = logging.getLogger("cvretrieval")

FEATURE_HELP = ("Embedder: hog, bovw[-DET], vlad[-DET], asmk[-DET], onnx:MODEL, tflite:MODEL, "
                "torchscript:MODEL, siamese:DIR, model:NAME, vectors:FILE.npz (eval/bench), "
                "or a plug-in (see `cvret embedders`).")


# --- shared options ---------------------------------------------------------------------
class DetectorType(click.ParamType):
    """``--detector``: sift, rootsift, orb, akaze, brisk, onnx:PATH or a plug-in's name."""

    name = "detector"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from ..features.detectors import normalize_detector

        try:
            return normalize_detector(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DETECTOR = DetectorType()


def _setup_logging(verbose: int, quiet: bool) -> None:
    levels = (logging.WARNING, logging.INFO, logging.DEBUG)
    level = logging.ERROR if quiet else levels[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)
    logging.captureWarnings(True)  # library warnings (Pillow's) as one-line log records


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


scheduler_option = click.option(
    "--scheduler", default=None, envvar="CVRET_SCHEDULER", metavar="ADDRESS",
    help="Run the workers on Dask: 'local' (a LocalCluster) or tcp://host:8786 (a running "
         "dask scheduler; env CVRET_SCHEDULER). Default: joblib processes here.")


def embedder_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options that choose and configure an embedder and an index (index, eval, demo)."""
    options = [
        click.option("--features", "features", default="bovw", show_default=True,
                     help=FEATURE_HELP),
        click.option("--detector", type=DETECTOR, default=None,
                     help="Local detector for bovw/vlad: sift, rootsift, orb, akaze, brisk, "
                          "onnx:MODEL or a plug-in (default sift / rootsift)."),
        click.option("--words", "n_words", type=click.IntRange(2), default=None,
                     help="Vocabulary size for bovw/vlad (default 1000 / 64)."),
        click.option("--n-features", type=click.IntRange(1), default=None,
                     help="Key points per image (default 1000)."),
        click.option("--max-descriptors", type=click.IntRange(1), default=None,
                     help="Descriptors sampled to fit the vocabulary (default 200000)."),
        click.option("--vocab", "vocab_dir",
                     type=click.Path(path_type=Path, exists=True, file_okay=False),
                     default=None, help="Use a vocabulary built by `cvret vocab build`."),
        click.option("--index", "index_spec", default="flat", show_default=True,
                     help="flat, ivf, lsh, pq, hnsw, auto (by --max-memory), sparse (BoVW "
                          "inverted file) or any Faiss factory string."),
        click.option("--max-memory", default=None, metavar="SIZE",
                     help="Memory budget of --index auto, e.g. 4G or 500M."),
        click.option("--refine", type=click.IntRange(0), default=None, metavar="N",
                     help="Re-rank the top N candidates of a search by their exact stored "
                          "vectors (default: 256 when --index auto chose PQ codes; 0 = off)."),
        click.option("--metric", type=click.Choice(["ip", "l2"]), default="ip", show_default=True),
        click.option("--max-side", type=click.IntRange(16), default=640, show_default=True,
                     help="Downscale images so their long side is at most this."),
        click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS",
                     help="Worker processes (-1 = all cores)."),
        scheduler_option,
        click.option("--random-state", type=int, default=0, show_default=True),
        click.option("--pca-whiten", type=click.IntRange(1), default=None, metavar="D",
                     help="Learn a PCA-whitening on the indexed images, keep D dimensions."),
        click.option("--whiten-on", type=click.Path(path_type=Path, exists=True), default=None,
                     metavar="DIR", help="Learn the --pca-whiten whitening on these images "
                                         "instead of the indexed ones."),
        click.option("--whiten-shrinkage", type=click.FloatRange(0, 1), default=0.5,
                     show_default=True, help="Eigenvalue shrinkage (0 = full whitening)."),
        click.option("--dba", type=click.IntRange(0), default=0, show_default=True, metavar="K",
                     help="Database-side augmentation with K neighbours (0 = off)."),
        click.option("--rerank", default=None, metavar="STEPS",
                     help="Re-ranking: sv (spatial verification), qe (query expansion), sv,qe."),
        click.option("--sv-matcher", type=click.Choice(["words", "words+desc"]),
                     default="words", show_default=True,
                     help="BoVW verification: equal words, or equal words whose descriptors "
                          "also agree (stores descriptors); words+desc also makes ASMK verify "
                          "with its own words (else: brute-force ratio matching)."),
        click.option("--sv-min-coverage", type=click.FloatRange(0, 1), default=None,
                     metavar="F", help="Copy detection: a verified image's inliers must span "
                                       "this fraction of its key points' hull (e.g. 0.5)."),
        click.option("--sv-order", type=click.Choice(["inliers", "rank", "coverage"]),
                     default="inliers", show_default=True,
                     help="Verified results by inliers, by first-stage rank, or by coverage."),
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

    from ..embedders import embedder_class, make_embedder, parse_spec

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
    from ..retriever import Retriever

    embedder = _make_embedder(features, detector, n_words, n_features, max_descriptors, vocab_dir,
                              random_state, params)
    from ..retriever import parse_rerank

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



def _write_report(out: Output, result: dict[str, Any], data: Any, report_dir: Path | None,
                  report_png: Path | None) -> None:
    if report_dir is None:
        if report_png is not None:
            raise click.UsageError("--report-png needs --report DIR")
        return
    from ..report import write_report

    page = write_report(result, data, report_dir)
    out.text(f"report: {page}")
    if report_png is not None:
        from ..render import render_html_to_png

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


