"""``cvret train``: Siamese heads and fine-tuned backbones."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from ._common import Output, common_options


@main.group("train")
def train_group() -> None:
    """Train models on labelled images (extra `siamese`: PyTorch)."""


@train_group.command("siamese")
@click.argument("dataset", type=click.Path(path_type=Path, exists=True))
@click.option("--base", default="mobilenet", show_default=True,
              help="Frozen base embedder spec (tflite:MODEL, hog, bovw-sift, vlad, ...); "
                   "'mobilenet' = the file named by $CVRET_MOBILENET.")
@click.option("--base-views", default=None, metavar="VIEWS",
              help="Views a network base embeds and averages, e.g. full,crop0.8 "
                   "(full, flip, cropF, cropF-flip); kept in the model.")
@click.option("--loss", type=click.Choice(["triplet", "contrastive"]), default="triplet",
              show_default=True)
@click.option("--margin", type=float, default=None, help="Loss margin (default: per loss).")
@click.option("--mining", type=click.Choice(["batch-hard", "semi-hard", "random"]),
              default="batch-hard", show_default=True)
@click.option("--head", default="512,256", show_default=True,
              help="Hidden and output sizes of the projection head.")
@click.option("--plain", is_flag=True,
              help="A plain MLP head instead of the residual one initialised at the base.")
@click.option("--init", "init", type=click.Choice(["pca", "lw"]), default="pca", show_default=True,
              help="Start the residual head's skip from PCA or from learned whitening of the "
                   "classes (lw: better on classes never seen in training).")
@click.option("--shrinkage", default="auto", show_default=True,
              help="--init lw: ridge of the learned whitening (a number >= 0), or auto "
                   "(cross-validated over held-out training classes).")
@click.option("--mix", default="auto", show_default=True,
              help="Weight of the head against the base embedding (0-1), or auto (validation).")
@click.option("--center", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True, help="Centre the base on the training mean.")
@click.option("--epochs", type=click.IntRange(0), default=None,
              help="Epochs (default 30 for a head, 10 with --backbone; 0: the closed-form "
                   "head alone, e.g. --init lw --head 512 --epochs 0 --val-split 0).")
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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, envvar="CVRET_DEVICE",
              help="Where the head or --backbone trains: auto = a CUDA GPU when PyTorch sees "
                   "one, else the CPU (env CVRET_DEVICE).")
@click.option("--max-side", type=click.IntRange(16), default=640, show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path, file_okay=False),
              default=None, help="Where base embeddings are cached (default: in the model folder).")
@click.option("--n-jobs", type=int, default=-1, show_default=True, envvar="CVRET_N_JOBS")
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Model folder (use it as --features siamese:FOLDER).")
@common_options
def train_siamese_cmd(dataset: Path, base: str, base_views: str | None, loss: str,
                      margin: float | None, mining: str,
                      head: str, plain: bool, init: str, shrinkage: str, mix: str, center: str,
                      epochs: int | None,
                      patience: int | None, batch_p: int | None, batch_k: int,
                      lr: float | None, weight_decay: float, val_split: float,
                      backbone: str | None, weights: Path | None, input_size: int, freeze: int,
                      dim: int | None, steps_per_epoch: int | None, device: str, max_side: int,
                      cache_dir: Path | None, n_jobs: int, random_state: int, output: Path,
                      out: Output) -> None:
    """Train a Siamese projection head over a frozen embedder on DATASET's classes.

    Base embeddings are computed once and cached; the best epoch by validation mAP on
    held-out classes is kept; the head is saved as ONNX, so `--features siamese:OUTPUT`
    runs without PyTorch. With --backbone, a ResNet with GeM pooling is fine-tuned end to
    end instead (weights from --weights) and saved as ONNX the same way.
    """
    from ..siamese.train import train_siamese

    try:
        sizes = tuple(int(v) for v in head.split(",") if v.strip())
        mix_value: str | float = mix if mix == "auto" else float(mix)
        shrink_value: str | float = shrinkage if shrinkage == "auto" else float(shrinkage)
    except ValueError:
        raise click.UsageError(
            "--head takes sizes like 512,256, --mix and --shrinkage a number or auto"
        ) from None
    centres: dict[str, str | bool] = {"auto": "auto", "yes": True, "no": False}
    centre = centres[center]
    result = train_siamese(dataset, base=base, base_views=base_views, loss=loss, margin=margin,
                           mining=mining,
                           head=sizes, residual=not plain, init=init, shrinkage=shrink_value,
                           mix=mix_value,
                           center=centre,
                           epochs=epochs, patience="auto" if patience is None else patience,
                           batch_p=batch_p, batch_k=batch_k,
                           lr=lr, weight_decay=weight_decay, val_split=val_split,
                           max_side=max_side, random_state=random_state, out_dir=output,
                           cache_dir=cache_dir, progress=out.progress, n_jobs=n_jobs,
                           backbone=backbone, weights=weights, input_size=input_size,
                           freeze=freeze, dim=dim, steps_per_epoch=steps_per_epoch,
                           device=device)
    if result.get("val_mAP") is None:  # --val-split 0: nothing held out to score
        scored = f"no validation, epoch {result.get('best_epoch')} kept"
    else:
        scored = (f"validation mAP {result['val_mAP']:.4f} (base {result['base_val_mAP']:.4f}, "
                  f"best epoch {result.get('best_epoch')})")
    out.text(f"model written to {output}: {scored}; use it with --features siamese:{output}")
    out.result(result)


