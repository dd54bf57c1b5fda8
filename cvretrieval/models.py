"""Pretrained embedders in one command: a small registry, checksum-verified downloads, a cache.

The registry ``cvretrieval/data/models.json`` lists openly licensed image models (name,
file URL pinned to a commit, published SHA-256, input size, preprocessing, pooling,
licence). :func:`fetch_model` downloads one with `pooch <https://www.fatiando.org/pooch/>`_
and :class:`cvretrieval.fetch.ResumableDownloader` (an interrupted download resumes) into
``CACHE/models/`` (``$CVRET_CACHE``, else the user cache folder), where pooch keeps it
only if its hash matches. A model without a published checksum is refused unless
``allow_unverified=True``, exactly as :func:`cvretrieval.fetch.fetch_dataset` does; the
SHA-256 of what was then downloaded is recorded and checked on every later use.

Classifiers are turned into embedders when fetched: with ``"output": "penultimate"`` the
input of the final classifier layer (the pooled features) is added as a graph output of
a copy of the file (``NAME.embed.onnx``, needs the ``onnx`` package), so the vector is
the 2048-d ResNet-50 feature rather than the 1000 class scores.

``base_url`` (or ``$CVRET_FETCH_BASE_URL``) replaces the scheme and host of every URL (a
mirror, a local test server); ``$CVRET_MODELS_REGISTRY`` names a JSON file of extra
entries (same format) merged over the shipped ones.

Examples
--------
>>> sorted(load_model_registry())[:2]
['coral-mobilenet-v1', 'mobilenetv2']
>>> model_info("resnet50-v2")["input_size"]
224
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._json import write_json_atomic
from .errors import ModelError

logger = logging.getLogger(__name__)

ENV_CACHE = "CVRET_CACHE"
ENV_REGISTRY = "CVRET_MODELS_REGISTRY"
RUNTIMES = ("onnx", "tflite")
#: registry keys that become embedder parameters (``None``: the embedder's default)
EMBEDDER_KEYS = ("input_size", "resize", "channels", "mean", "std", "pooling", "p")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}
_PASS_THROUGH = {"Flatten", "Reshape", "Squeeze", "Softmax", "Identity", "Dropout", "Cast"}
_CLASSIFIERS = {"Gemm", "MatMul", "Conv"}

__all__ = [
    "ENV_CACHE",
    "ENV_REGISTRY",
    "cache_dir",
    "fetch_model",
    "list_models",
    "load_model_registry",
    "model_info",
    "model_record",
    "penultimate_output",
]


# --------------------------------------------------------------------------- registry
def cache_dir() -> Path:
    """``$CVRET_CACHE`` if set, else the user's cache folder for cvretrieval."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("cvretrieval"))


def _read_registry(text: str, where: str) -> dict[str, dict[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model registry {where} is not valid JSON ({exc})") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, dict):
        raise ModelError(f"model registry {where} has no 'models' object")
    for name, entry in models.items():
        _check_entry(name, entry, where)
    return models


def _check_entry(name: str, entry: Any, where: str) -> None:
    what = f"model {name!r} of {where}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelError(f"{what}: a name is lower-case letters, digits, '.', '_' and '-'")
    if not isinstance(entry, Mapping):
        raise ModelError(f"{what} must be an object")
    if not isinstance(entry.get("url"), str) or "://" not in entry["url"]:
        raise ModelError(f"{what} needs a 'url'")
    if entry.get("runtime") not in RUNTIMES:
        raise ModelError(f"{what}: runtime must be one of {', '.join(RUNTIMES)}")
    sha = entry.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _HEX.match(sha.lower())):
        raise ModelError(f"{what}: sha256 {sha!r} is not a hex SHA-256 (or null)")
    if entry.get("output") not in (None, "penultimate") and entry["runtime"] != "onnx":
        raise ModelError(f"{what}: only ONNX models can name an output")


def load_model_registry(path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The model registry, ``{name: entry}``.

    Parameters
    ----------
    path : path-like, optional
        A registry JSON file to use instead of the shipped one. Without it, the shipped
        registry with the entries of ``$CVRET_MODELS_REGISTRY`` (if set) merged over it.

    Raises
    ------
    ModelError
        If a registry file is missing, not JSON, or has an invalid entry.
    """
    files = [Path(path)] if path is not None else []
    if path is None:
        from importlib.resources import files as package_files

        text = package_files("cvretrieval").joinpath("data/models.json").read_text("utf-8")
        registry = _read_registry(text, "cvretrieval/data/models.json")
        extra = os.environ.get(ENV_REGISTRY)
        files = [Path(extra)] if extra else []
    else:
        registry = {}
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"cannot read the model registry {f}: {exc.strerror}") from None
        registry.update(_read_registry(text, str(f)))
    return registry


def model_info(name: str, registry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The registry entry of ``name`` (a copy); a ModelError listing the names if unknown."""
    reg = load_model_registry() if registry is None else registry
    if name not in reg:
        raise ModelError(
            f"unknown model {name!r}; known: {', '.join(sorted(reg)) or '(none)'} "
            "(see `cvret models list`)"
        )
    return copy.deepcopy(dict(reg[name]))


def _paths(name: str, entry: Mapping[str, Any], root: Path | None) -> tuple[Path, Path, Path]:
    """``(download, record, embedding file)`` of a model in the cache."""
    folder = (root if root is not None else cache_dir()) / "models"
    download = folder / f"{name}{_SUFFIX[entry['runtime']]}"
    ready = folder / f"{name}.embed.onnx" if entry.get("output") == "penultimate" else download
    return download, folder / f"{name}.json", ready


def model_record(name: str, *, registry: Mapping[str, Any] | None = None,
                 root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What :func:`fetch_model` recorded for ``name``: ``path`` (the file to run),
    ``sha256`` (of that file), the embedder parameters; a ModelError saying to fetch it
    when it is not in the cache or its file changed since."""
    from .embedders.runtimes import file_sha256

    entry = model_info(name, registry)
    _, rec_path, _ = _paths(name, entry, Path(root) if root is not None else None)
    fetch = f"run `cvret models fetch {name}`"
    try:
        record = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ModelError(f"model {name!r} is not downloaded: {fetch}") from None
    path = Path(record.get("path", ""))
    if not path.is_file():
        raise ModelError(f"model {name!r} is missing from the cache ({path}): {fetch}")
    if file_sha256(path) != record.get("sha256"):
        raise ModelError(
            f"{path} changed since it was fetched (its SHA-256 is not the recorded one): "
            f"{fetch} --force"
        )
    return record


def list_models(registry: Mapping[str, Any] | None = None, *,
                root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """One row per registered model: name, title, runtime, input size, pooling, licence,
    size in MB, ``verified`` (a published checksum), ``fetched`` and the cached ``path``."""
    reg = load_model_registry() if registry is None else registry
    rows = []
    for name in sorted(reg):
        e = reg[name]
        _, rec, ready = _paths(name, e, Path(root) if root is not None else None)
        rows.append({
            "name": name, "title": e.get("title", name), "runtime": e["runtime"],
            "input_size": e.get("input_size"), "pooling": e.get("pooling", "gap"),
            "licence": e.get("licence"), "size_mb": round(e["size"] / 2**20, 1)
            if isinstance(e.get("size"), int) else None,
            "verified": e.get("sha256") is not None, "fetched": rec.is_file() and ready.is_file(),
            "path": str(ready), "source": e.get("source"),
        })
    return rows


# --------------------------------------------------------------------------- fetching
def penultimate_output(model: Any) -> str:
    """The tensor that feeds an ONNX classifier's last layer (Gemm, MatMul or 1×1 Conv),
    found by walking back from the first graph output through Softmax/Flatten/Reshape/Add.

    Raises
    ------
    ModelError
        If the graph does not end in such a layer.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    name = graph.output[0].name
    node = producer.get(name)
    for _ in range(len(graph.node)):
        if node is None or node.op_type not in _PASS_THROUGH | {"Add"}:
            break
        if node.op_type == "Add":  # MatMul + bias
            inner = [producer.get(i) for i in node.input]
            node = next((n for n in inner if n is not None and n.op_type == "MatMul"), None)
            break
        node = producer.get(node.input[0])
    if node is None or node.op_type not in _CLASSIFIERS:
        raise ModelError(
            f"cannot find the classifier layer at the end of the graph (output {name!r}): "
            "give the model an embedding output, or use it with onnx:PATH --param output_name=..."
        )
    feature = str(node.input[0])
    source = producer.get(feature)
    for _ in range(len(graph.node)):  # (N, C, 1, 1) pooled map rather than its flattened copy
        if source is None or source.op_type not in ("Flatten", "Reshape", "Squeeze"):
            break
        feature, source = str(source.input[0]), producer.get(source.input[0])
    return feature


def _expose_penultimate(src: Path, dst: Path) -> str:
    try:
        import onnx
    except ImportError:
        raise ModelError(
            "turning a classifier into an embedder needs onnx: pip install 'cvretrieval[deep]'"
        ) from None
    model = onnx.load(str(src))
    feature = penultimate_output(model)
    if feature not in {o.name for o in model.graph.output}:
        model.graph.output.insert(
            0, onnx.helper.make_tensor_value_info(feature, onnx.TensorProto.FLOAT, None)
        )
    tmp = dst.with_name(dst.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)
    return feature


def fetch_model(
    name: str,
    *,
    base_url: str | None = None,
    allow_unverified: bool = False,
    force: bool = False,
    progress: bool = True,
    registry: Mapping[str, Any] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> Path:
    """Download, verify and prepare the registered model ``name``; return the file to run.

    Parameters
    ----------
    name : str
        A registry name (see :func:`list_models`).
    base_url : str, optional
        Replace the scheme and host of the URL; default ``$CVRET_FETCH_BASE_URL``.
    allow_unverified : bool
        Download a model that has no published checksum (its SHA-256 is logged and
        recorded). Without it such a model is refused before any byte is downloaded.
    force : bool
        Download and prepare again even if the cache holds it.
    progress : bool
        A progress bar (on a terminal).
    registry : mapping, optional
        ``{name: entry}`` to use instead of :func:`load_model_registry`.
    root : path-like, optional
        The cache folder (default :func:`cache_dir`); files go to ``root/models/``.

    Raises
    ------
    ModelError
        Unknown name, no checksum without ``allow_unverified``, a checksum mismatch (the
        file is deleted), a network failure (the partial download is kept and resumed).
    """
    import pooch
    import requests

    from .embedders.runtimes import file_sha256
    from .fetch import ENV_BASE_URL, ResumableDownloader, rebase_url

    entry = model_info(name, registry)
    download, rec_path, ready = _paths(name, entry, Path(root) if root is not None else None)
    if not force:
        try:
            record = model_record(name, registry={name: entry}, root=root)
            logger.info("%s is already in the cache: %s", name, record["path"])
            return Path(record["path"])
        except ModelError:
            pass
    known = entry.get("sha256")
    if known is None and not allow_unverified:
        raise ModelError(
            f"no published checksum for model {name!r}, so its download cannot be verified; "
            "pass allow_unverified=True (cvret: --allow-unverified) to download it anyway: "
            f"its SHA-256 will be logged and recorded in {rec_path}"
        )
    if base_url is None:
        base_url = os.environ.get(ENV_BASE_URL) or None
    url = rebase_url(entry["url"], base_url)
    download.parent.mkdir(parents=True, exist_ok=True)
    if force:
        for f in (download, ready, rec_path):
            f.unlink(missing_ok=True)
    logger.info("fetching model %s (%s)", name, url)
    plog = pooch.get_logger()
    level = plog.level
    plog.setLevel(logging.WARNING)
    try:
        pooch.retrieve(url, known_hash=known.lower() if known else None, fname=download.name,
                       path=download.parent, progressbar=False,
                       downloader=ResumableDownloader(download.with_name(download.name + ".part"),
                                                      progress=progress))
    except requests.exceptions.RequestException as exc:
        raise ModelError(
            f"could not download {url} ({type(exc).__name__}): check the network (or base "
            "URL) and run again; a partial download is resumed"
        ) from None
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise ModelError(
            f"checksum mismatch for model {name!r} from {url}: expected SHA-256 {known}; the "
            "file was deleted: run again, or report it if it persists"
        ) from None
    except OSError as exc:
        raise ModelError(f"could not download {url}: {exc}") from None
    finally:
        plog.setLevel(level)
    digest = file_sha256(download)
    if known is None:
        logger.warning("model %s has no published checksum; the downloaded file has SHA-256 %s",
                       name, digest)
    output_name = None
    if entry.get("output") == "penultimate":
        output_name = _expose_penultimate(download, ready)
        logger.info("%s: embedding output %r added (%s)", name, output_name, ready.name)
    record = {
        "name": name, "url": url, "verified": known is not None, "download_sha256": digest,
        "path": str(ready), "sha256": file_sha256(ready), "runtime": entry["runtime"],
        "output_name": output_name,
        **{k: entry.get(k) for k in EMBEDDER_KEYS if entry.get(k) is not None},
    }
    write_json_atomic(rec_path, record, indent=1)
    logger.info("model %s ready: %s (use --features model:%s)", name, ready, name)
    return ready
