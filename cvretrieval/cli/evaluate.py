"""``cvret eval`` and ``cvret bench``: scoring retrievers and vectors on data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import main
from ._common import (
    Output,
    _make_retriever,
    _print_failures,
    _stack,
    _write_report,
    common_options,
    embedder_options,
    report_options,
    scheduler_option,
)


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
              help="Alias of --features vectors:FILE: score precomputed embeddings (.npz with "
                   "gallery, queries[, metric, gallery_paths, query_paths]).")
@click.option("--distractors", type=click.Path(path_type=Path, exists=True, file_okay=False),
              default=None, metavar="DIR_OR_BUNDLE",
              help="Add distractors to the gallery: a folder of images (embedded with the same "
                   "features) or a bundle built by `cvret index` with the same features.")
@click.option("--ndcg-gain", type=click.Choice(["linear", "exponential"]), default="linear",
              show_default=True, help="Gain of NDCG@k (reported when the ground truth has grades).")
@_stack(report_options)
@embedder_options
@common_options
def eval_cmd(dataset: Path, fmt: str | None, k: int | None, protocol: str | None,
             data_cache: Path | None, vectors: Path | None, distractors: Path | None,
             ndcg_gain: str, report_dir: Path | None, report_png: Path | None, out: Output,
             **options: Any) -> None:
    """Score DATASET's queries against its gallery (mAP, P@k, N-S, NDCG, ...).

    Builds a retriever with the given features, or scores precomputed vectors of any model
    (a Keras, TensorFlow or PyTorch model trained elsewhere) with --features vectors:FILE.npz.
    """
    from ..datasets import load_dataset
    from ..embedders import embedder_class, make_embedder, parse_spec
    from ..evaluation import evaluate, evaluate_embedder, format_metrics_table

    data = load_dataset(dataset, format=fmt, protocol=protocol, cache_dir=data_cache)
    if vectors is not None:
        options["features"] = f"vectors:{vectors}"
    features = options["features"]
    name, _ = parse_spec(features)
    if getattr(embedder_class(name), "takes_paths", False):
        if distractors is not None:
            raise click.UsageError("--distractors needs image features, not precomputed vectors")
        report = evaluate_embedder(make_embedder(features), data, metric=options["metric"], k=k,
                                   ndcg_gain=ndcg_gain, progress=out.progress)
        what = f"features {features}"
    else:
        ret = _make_retriever(**options)
        ret.build(data.image_paths(), progress=out.progress)
        _print_failures(out, ret.last_run_)
        target: Any = ret
        if distractors is not None:
            from ..distractors import WithDistractors

            target = WithDistractors(ret, distractors, exclude=[*data.image_paths(),
                                                                 *data.query_paths()],
                                     progress=out.progress)
        report = evaluate(target, data, k=k, progress=out.progress, ndcg_gain=ndcg_gain)
        report["build"] = {key: v for key, v in ret.last_run_.items() if key != "failed"}
        what = f"features {features}, index {options['index_spec']}"
        if distractors is not None:
            what += f", {report['config']['distractors']['n']} distractors"
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
@scheduler_option
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
              max_side: int, n_jobs: int, scheduler: str | None, random_state: int,
              cache_dir: Path | None, pca_whiten: int | None, dba: int, rerank: str | None,
              qe_k: int, protocol: str | None, out: Output) -> None:
    """Evaluate several embedders on DATASET in one run: one table of quality and seconds.

    Local features are extracted once per detector and shared between configurations
    (bovw-sift and vlad-sift reuse the same SIFT key points).
    """
    import tempfile

    from ..bench import run_bench
    from ..datasets import load_dataset
    from ..retriever import parse_rerank

    data = load_dataset(dataset, format=fmt, protocol=protocol)
    specs = [f.strip() for f in feature_list.split(",") if f.strip()]
    options = {"pca_whiten": pca_whiten, "dba": dba, "rerank": parse_rerank(rerank), "qe_k": qe_k,
               "scheduler": scheduler}
    with tempfile.TemporaryDirectory(prefix="cvret-bench-") as tmp:
        result = run_bench(data, specs, index=index_spec, metric=metric, max_side=max_side,
                           n_jobs=n_jobs, random_state=random_state,
                           feature_cache=cache_dir or Path(tmp), retriever_options=options,
                           progress=out.progress)
    out.text(f"{data.name or dataset}: {len(data.qimlist)} queries, {len(data.imlist)} images, "
             f"index {index_spec}")
    out.text(result["table"])
    out.result(result)


