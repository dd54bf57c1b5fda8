"""Export of trained Siamese models: the ONNX graphs and the model folder.

:func:`export_onnx` writes a head (base embedding → vector) and
:func:`export_backbone_onnx` a fine-tuned CNN (image → GeM vector), both with the
TorchScript exporter (``dynamo=False``: torch and onnx only);
:func:`write_model_dir` writes ``training.png`` and, last, ``siamese.json``, which
:class:`cvretrieval.embedders.siamese.SiameseEmbedder` reads.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..embedders.siamese import MODEL_FORMAT, MODEL_FORMAT_VERSION
from ..errors import CVRetrievalError
from ._torch import torch

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
#: what a model folder may hold (anything else makes :func:`prepare_out_dir` refuse it)
MODEL_DIR_FILES = (
    "siamese.json", "head.onnx", "backbone.onnx", "base", "cache", "training.png",
)

__all__ = [
    "MODEL_DIR_FILES",
    "ONNX_OPSET",
    "export_backbone_onnx",
    "export_onnx",
    "plot_history",
    "prepare_out_dir",
    "write_model_dir",
]


def export_onnx(model: Any, path: str | Path, in_dim: int | None = None) -> Path:
    """Write ``model`` (a :class:`SiameseModel` or any ``(n, in_dim) → (n, out)`` module) to ONNX.

    The graph has one input ``embedding`` (float32, ``(batch, in_dim)``) and one output
    ``output``, with a dynamic batch axis; opset :data:`ONNX_OPSET`. Uses the TorchScript
    exporter (``dynamo=False``), which needs no package beyond torch and onnx.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    in_dim = int(in_dim if in_dim is not None else model.in_dim)
    was_training = model.training
    model.eval()
    dummy = torch.zeros(2, in_dim, dtype=torch.float32)
    dummy[:, 0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["embedding"],
            output_names=["output"],
            dynamic_axes={"embedding": {0: "batch"}, "output": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
            external_data=False,
        )
    model.train(was_training)
    logger.info("exported the head to %s", path)
    return path


def export_backbone_onnx(backbone: Any, path: str | Path, size: int) -> Path:
    """Write ``backbone`` as ONNX: input ``image`` float32 ``(batch, 3, size, size)``
    (ImageNet-normalised RGB), output ``features`` ``(batch, dim)``, unit rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was = backbone.training
    backbone.eval()
    dummy = torch.zeros(1, 3, int(size), int(size), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            backbone, (dummy,), str(path), input_names=["image"], output_names=["features"],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
            opset_version=ONNX_OPSET, dynamo=False, external_data=False,
        )
    backbone.train(was)
    return path


def plot_history(history: list[dict[str, Any]], best_epoch: int, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no training plot (extra 'report')")
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [r["epoch"] for r in history if r["loss"] is not None]
    ax.plot(ep, [r["loss"] for r in history if r["loss"] is not None], "C0-", label="loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="C0")
    if any(r.get("val_mAP") is not None for r in history):
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] for r in history], [r["val_mAP"] for r in history], "C1-o", ms=3)
        ax2.axvline(best_epoch, color="C1", ls=":", lw=1)
        ax2.set_ylabel("validation mAP (held-out classes)", color="C1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise CVRetrievalError(f"{out_dir} is a file: choose a folder for the model")
        allowed = set(MODEL_DIR_FILES)
        other = sorted(p.name for p in out_dir.iterdir() if p.name not in allowed)
        if other:
            raise CVRetrievalError(
                f"{out_dir} exists and holds files that are not part of a Siamese model "
                f"({', '.join(other[:3])}): choose an empty or new folder"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "siamese.json").unlink(missing_ok=True)  # the folder is incomplete until the end


def write_model_dir(
    out: Path, base_meta: dict[str, Any], head_meta: dict[str, Any], dim: int,
    config: dict[str, Any], info: dict[str, Any], data_name: str, max_side: int | None,
    y: NDArray[np.int64], train_mask: NDArray[np.bool_], val_mask: NDArray[np.bool_],
    names: list[str], skipped: list[str], embed_seconds: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``training.png`` and, last, ``siamese.json`` (the folder is complete once it
    exists); return what :func:`train_siamese` returns."""
    classes_train = sorted({names[c] for c in np.unique(y[train_mask])})
    classes_val = sorted({names[c] for c in np.unique(y[val_mask])})
    figures = []
    fig = plot_history(info["history"], info["best_epoch"], out / "training.png")
    if fig is not None:
        figures.append(str(fig))
    scores = {k: info[k] for k in ("best_epoch", "val_mAP", "base_val_mAP", "centered_val_mAP")}
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cvretrieval": __version__,
        "base": base_meta,
        "head": head_meta,
        **(extra or {}),
        "dim": dim,
        "max_side": max_side,
        "dataset": data_name,
        "training": config,
        "classes_train": classes_train,
        "classes_val": classes_val,
        **scores,
        "history": info["history"],
    }
    (out / "siamese.json").write_text(json.dumps(meta, indent=2, default=str))
    logger.info("wrote the model to %s (best epoch %d)", out, info["best_epoch"])
    base_spec = {k: v for k, v in base_meta.items() if k not in ("dim", "dir", "model_file")}
    return {
        "model_dir": str(out),
        "dim": dim,
        "base": base_spec,
        **(extra or {}),
        **{k: info[k] for k in ("history", "beta", "center", "train_seconds")},
        **{k: info.get(k) for k in ("shrinkage", "shrinkage_scores")},  # learned whitening
        **scores,
        "n_train": int(train_mask.sum()),
        "n_val": int(val_mask.sum()),
        "classes_train": classes_train,
        "classes_val": classes_val,
        "skipped": skipped,
        "embed_seconds": round(embed_seconds, 2),
        "figures": figures,
    }
