"""A self-contained HTML page describing one evaluation: metrics, curves, best and worst queries.

:func:`write_report` turns the dict returned by
:func:`cvretrieval.evaluation.evaluate` (and the data set it was computed on)
into ``OUT_DIR/index.html``: one file, every image inlined as a base64 data URI,
no script, no external style sheet, so it can be mailed or attached to a CI run.

The page shows

* headline numbers and the metrics table (``result["metrics"]``; grouped
  metrics such as revisited Easy/Medium/Hard protocols as one table with a
  column per group),
* a precision-recall curve (``result["pr_curve"]``; when absent the mean
  (R@k, P@k) points of the metrics) and a histogram of per-query AP,
* for the worst and the best queries by AP, the query (cropped to its box) and
  its first 10 results outlined green (relevant), red (not relevant) or dashed
  grey (junk, ignored when scoring),
* the failed queries, the data set summary and the configuration.

Needs the ``report`` extra (matplotlib and jinja2): ``pip install 'cvretrieval[report]'``.

References
----------
.. [1] F. Radenović et al., "Revisiting Oxford and Paris: Large-Scale Image
       Retrieval Benchmarking", CVPR 2018 (junk images, Easy/Medium/Hard).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvretrieval.errors import MissingExtraError
from cvretrieval.render import COLORS, Thumbs, ap_figure, pr_figure

logger = logging.getLogger(__name__)

__all__ = ["COLORS", "write_report"]



_TEMPLATE = "report.html.j2"
_N_TOP = 10
_INSTALL = "pip install 'cvretrieval[report]'"


# --------------------------------------------------------------------------- optional deps
def _require_report_extra() -> Any:
    """Import jinja2 and matplotlib's Figure, or raise MissingExtraError naming the extra."""
    try:
        import jinja2
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtraError(
            f"HTML reports need matplotlib and jinja2 ({exc.name or exc} is missing); "
            f"install them with: {_INSTALL}"
        ) from exc
    return jinja2, Figure


# --------------------------------------------------------------------------- formatting
def _fmt(value: Any) -> str:
    """A metric value as text: floats with 4 decimals, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "—" if math.isnan(v) else f"{v:.4f}"
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float, np.number)) or v is None for v in value
    ):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, np.number, np.bool_))


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested dict -> [(dotted.key, text)]."""
    rows: list[tuple[str, str]] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, name + "."))
        elif _is_scalar(value):
            text = value if isinstance(value, str) else _fmt(value)
            rows.append((name, text or "—"))
        else:
            rows.append((name, json.dumps(value, default=str)))
    return rows


_AT_K = re.compile(r"^(?P<name>[A-Za-z]+)@(?P<k>\d+)$")
_TAGGED = re.compile(r"^(?P<name>.+) \((?P<tag>[EMH])\)$")
_PROTOCOL_TAG = {"easy": "E", "medium": "M", "hard": "H"}


def _table(title: str, columns: list[str], rows: list[tuple[str, list[Any]]]) -> dict[str, Any]:
    return {
        "title": title,
        "columns": columns,
        "rows": [{"name": n, "values": [_fmt(v) for v in vals]} for n, vals in rows],
    }


def _protocol_groups(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Protocol name -> its scalar metrics, from ``result["protocols"]`` or dict-valued metrics."""
    groups: dict[str, Mapping[str, Any]] = {}
    protocols = result.get("protocols")
    if isinstance(protocols, Mapping):
        for name, values in protocols.items():
            if isinstance(values, Mapping):
                inner = values.get("metrics", values)
                if isinstance(inner, Mapping):
                    groups[str(name)] = inner
    for name, values in (result.get("metrics") or {}).items():
        if isinstance(values, Mapping):
            groups.setdefault(str(name), values)
    return groups


def _metric_tables(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metrics as up to three tables: summary, at cut-off k, by protocol.

    ``name@k`` scalars (mAP@k, P@k, R@k) become one table with a row per k and
    a column per name; protocol metrics (``result["protocols"]``, or flat
    ``"mAP (E)"`` keys, or dict-valued metrics) one table with a column per
    protocol; every other scalar goes to the summary. Per-query lists (such as
    a protocol's ``ap``) are left out.
    """
    metrics = result.get("metrics") or {}
    summary: list[tuple[str, list[Any]]] = []
    at_k: dict[int, dict[str, Any]] = {}
    names_k: list[str] = []
    tagged: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        if not _is_scalar(value) or isinstance(value, str):
            continue
        m = _AT_K.match(str(key))
        t = _TAGGED.match(str(key))
        if m:
            at_k.setdefault(int(m["k"]), {})[m["name"]] = value
            if m["name"] not in names_k:
                names_k.append(m["name"])
        elif t:
            tagged.setdefault(t["tag"], {})[t["name"]] = value
        else:
            summary.append((str(key), [value]))
    tables = []
    if summary:
        tables.append(_table("Summary", ["value"], summary))
    if at_k:
        rows = [(f"k = {k}", [at_k[k].get(n) for n in names_k]) for k in sorted(at_k)]
        tables.append(_table("At cut-off k", [f"{n}@k" for n in names_k], rows))
    groups = _protocol_groups(result)
    if not groups and tagged:
        groups = dict(tagged)
    if groups:
        cols = list(groups)
        keys: list[str] = []
        for g in cols:
            for k, v in groups[g].items():
                if _is_scalar(v) and not isinstance(v, str) and k not in keys:
                    keys.append(k)
        header = [f"{c} ({_PROTOCOL_TAG[c]})" if c in _PROTOCOL_TAG else c for c in cols]
        rows = [(k, [groups[g].get(k) for g in cols]) for k in keys]
        tables.append(_table("By protocol (revisitop)", header, rows))
    return tables


def _headline(result: Mapping[str, Any]) -> list[dict[str, str]]:
    metrics = result.get("metrics") or {}
    cards = []
    wanted = ["mAP", "mAP (E)", "mAP (M)", "mAP (H)", "mAP@100 (GLDv2)", "P@1", "P@5", "R@10",
              "NDCG@10"]
    if (result.get("dataset") or {}).get("format") == "ukbench" or "ns_score" in metrics:
        wanted.append("ns_score")
    for key in wanted:
        if key in metrics and _is_scalar(metrics[key]):
            cards.append({"label": key, "value": _fmt(metrics[key])})
    n_q = metrics.get("n_queries", len(result.get("per_query") or []))
    cards.append({"label": "queries", "value": str(n_q)})
    if metrics.get("n_failed"):
        cards.append({"label": "failed queries", "value": str(metrics["n_failed"])})
    if result.get("search_seconds") is not None:
        cards.append({"label": "search seconds", "value": f"{float(result['search_seconds']):.2f}"})
    return cards


def _pick_examples(per_query: Sequence[Mapping[str, Any]], n: int) -> tuple[list[int], list[int]]:
    """Indices into ``per_query`` of the ``n`` worst and ``n`` best queries by AP (ties: order)."""
    scored = [(float(q["ap"]), i) for i, q in enumerate(per_query) if q.get("ap") is not None]
    if n <= 0 or not scored:
        return [], []
    worst = [i for _, i in sorted(scored, key=lambda t: (t[0], t[1]))[:n]]
    rest = [t for t in scored if t[1] not in set(worst)]
    best = [i for _, i in sorted(rest, key=lambda t: (-t[0], t[1]))[:n]]
    return worst, best


def _example_row(
    entry: Mapping[str, Any], pos: int, dataset: Any, thumbs: Thumbs
) -> dict[str, Any]:
    q = int(entry.get("query", pos))
    gnd = dataset.gnd[q]
    ok = {int(v) for v in gnd.get("ok", [])}
    junk = {int(v) for v in gnd.get("junk", [])}
    qpath = dataset.query_paths()[q]
    bbox = dataset.query_bboxes()[q]
    src, w, h, problem = thumbs.get(qpath, bbox)
    qtitle = dataset.qimlist[q] + (f" (box {', '.join(f'{v:g}' for v in bbox)})" if bbox else "")
    tiles = [
        {
            "cls": "query",
            "src": src,
            "width": w,
            "height": h,
            "alt": f"query {q}",
            "title": qtitle + (f": {problem}" if problem else ""),
            "caption": "query",
        }
    ]
    top = entry.get("top_raw")
    if top is None:
        top = entry.get("top") or []
    n_im = len(dataset.imlist)
    for rank, idx in enumerate(list(top)[:_N_TOP], start=1):
        if idx is None:
            src, w, h = thumbs.placeholder("not in\ndata set")
            cls, title, problem = "bad", "a distractor outside the data set's gallery", ""
        elif not 0 <= int(idx) < n_im:
            src, w, h = thumbs.placeholder("bad index")
            cls, title, problem = "bad", f"gallery index {idx} is out of range", ""
        else:
            idx = int(idx)
            src, w, h, problem = thumbs.get(dataset.image_paths()[idx])
            cls = "ok" if idx in ok else "junk" if idx in junk else "bad"
            title = dataset.imlist[idx]
        label = {"ok": "relevant", "bad": "not relevant", "junk": "junk"}[cls]
        tiles.append(
            {
                "cls": cls,
                "src": src,
                "width": w,
                "height": h,
                "alt": f"rank {rank}: {label}",
                "title": title + (f": {problem}" if problem else ""),
                "caption": f"#{rank}",
            }
        )
    ap = entry.get("ap")
    return {
        "query": q,
        "ap": _fmt(ap) if ap is not None else "—",
        "name": Path(dataset.qimlist[q]).name,
        "tiles": tiles,
    }


# --------------------------------------------------------------------------- the page
def _title(result: Mapping[str, Any], dataset: Any) -> str:
    config = result.get("config") or {}
    what = None
    if isinstance(config, Mapping):
        emb = config.get("embedder")
        if isinstance(emb, Mapping):
            what = emb.get("name")
        elif isinstance(emb, str):
            what = emb
        what = what or config.get("features") or config.get("name")
    ds_name = (
        (result.get("dataset") or {}).get("name") or getattr(dataset, "name", "") or "data set"
    )
    return f"{what} on {ds_name}" if what else f"Retrieval evaluation on {ds_name}"


def write_report(
    result: Mapping[str, Any],
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    title: str | None = None,
    n_examples: int = 5,
    thumb_size: int = 128,
) -> Path:
    """Write a self-contained HTML report of an evaluation to ``out_dir/index.html``.

    Parameters
    ----------
    result : dict
        What :func:`cvretrieval.evaluation.evaluate` returned: ``config``,
        ``dataset``, ``metrics``, ``per_query`` (each with ``query``, ``ap`` and
        ``top``/``top_raw``: up to 10 gallery indices, ``None`` for an image
        outside the data set), ``failed``, optionally ``pr_curve``
        (``{"recall": [...], "precision": [...]}``).
    dataset : RetrievalDataset
        The data set the result was computed on (images, boxes, ground truth).
    out_dir : path-like
        Folder to write ``index.html`` into (created).
    title : str, optional
        Page title; default "<embedder> on <data set>".
    n_examples : int
        How many worst and how many best queries (by AP) to show.
    thumb_size : int
        Longest side of a thumbnail, in pixels.

    Returns
    -------
    Path
        ``out_dir/index.html``.

    Raises
    ------
    MissingExtraError
        matplotlib or jinja2 is not installed (``pip install 'cvretrieval[report]'``).
    ValueError
        ``thumb_size`` < 16, ``n_examples`` < 0, or ``per_query`` does not match
        the data set's queries.

    Notes
    -----
    An image that cannot be read becomes a grey placeholder tile (the reason is
    in its tooltip); it never stops the report.

    Examples
    --------
    >>> from cvretrieval import evaluate, load_dataset, Retriever      # doctest: +SKIP
    >>> data = load_dataset("ukbench-56")                              # doctest: +SKIP
    >>> ret = Retriever("hog").build(data.image_paths())               # doctest: +SKIP
    >>> write_report(evaluate(ret, data), data, "report")              # doctest: +SKIP
    PosixPath('report/index.html')
    """
    jinja2, Figure = _require_report_extra()
    if int(thumb_size) < 16:
        raise ValueError(f"thumb_size must be at least 16 pixels, got {thumb_size}")
    if int(n_examples) < 0:
        raise ValueError(f"n_examples must be >= 0, got {n_examples}")
    per_query = list(result.get("per_query") or [])
    nq = len(dataset.qimlist)
    for i, entry in enumerate(per_query):
        q = int(entry.get("query", i))
        if not 0 <= q < nq:
            raise ValueError(
                f"per_query[{i}] is query {q} but the data set has {nq} queries; "
                "pass the data set the result was computed on"
            )

    thumbs = Thumbs(int(thumb_size))
    worst, best = _pick_examples(per_query, int(n_examples))
    groups = [
        {
            "title": f"The {len(worst)} worst queries (lowest AP)",
            "rows": [_example_row(per_query[i], i, dataset, thumbs) for i in worst],
        },
        {
            "title": f"The {len(best)} best queries (highest AP)",
            "rows": [_example_row(per_query[i], i, dataset, thumbs) for i in best],
        },
    ]
    pr_item, note = pr_figure(Figure, result)
    figures = [pr_item, ap_figure(Figure, result)]

    ds_info: dict[str, Any] = {}
    try:
        ds_info.update(dataset.summary())
    except Exception:  # a duck-typed data set without summary()
        pass
    ds_info.update(result.get("dataset") or {})
    ds_rows = [(k, v) for k, v in _flatten(ds_info) if v != "—"]
    extra = {"k (results per query)": result.get("k")}
    config_rows = _flatten(result.get("config") or {}) + [
        (k, _fmt(v)) for k, v in extra.items() if v is not None
    ]

    from cvretrieval import __version__

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    ds_name = ds_info.get("name") or getattr(dataset, "name", "")
    page_title = title or _title(result, dataset)
    html = env.get_template(_TEMPLATE).render(
        title=page_title,
        subtitle=(
            f"{ds_info.get('queries', nq)} queries against {ds_info.get('images', '?')} "
            f"gallery images of {ds_name or 'the data set'}"
            + (f" ({ds_info['format']})" if ds_info.get("format") else "")
        ),
        cards=_headline(result),
        metric_tables=_metric_tables(result),
        figures=figures,
        figure_note=note,
        example_groups=groups,
        any_bbox=any(b is not None for b in dataset.query_bboxes()),
        failed=list(result.get("failed") or []),
        dataset_rows=ds_rows,
        config_rows=config_rows,
        colors=COLORS,
        thumb_size=int(thumb_size),
        n_tiles=1 + _N_TOP,
        version=__version__,
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    logger.info("wrote report %s (%.0f kB)", path, path.stat().st_size / 1024)
    return path
