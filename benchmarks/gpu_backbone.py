"""Steps per second of ``--backbone`` fine-tuning (ResNet + GeM) on the CPU and on a GPU.

    python benchmarks/gpu_backbone.py                      # cpu, and cuda when visible
    python benchmarks/gpu_backbone.py --devices cuda --steps-cuda 40
    python benchmarks/gpu_backbone.py --data ../shared/datasets/caltech101-dev

What runs is the library's own training loop, :func:`cvretrieval.siamese.backbone.fit_backbone`
(P×K batches, triplet loss, batch-hard mining, AdamW, horizontal flips), from a randomly
initialised ResNet whose state dict is first saved to a temporary file and loaded with
``weights=`` (the path real ImageNet weights take). Images are generated (textured
shapes, one colour family per class) unless ``--data`` names class folders. For each
device: one warm-up step (CUDA context, cuDNN autotuning), then ``--steps-*`` timed
steps (one epoch, timed by the loop itself, without model set-up); ``steps/s`` and
``images/s`` (``P × K`` images a step) are printed and saved to
``benchmarks/out/gpu_backbone.json``. Sized to finish well under 4 minutes on a 16-core
machine with one GPU (defaults: ResNet-50, 224 px, 8×4 batches, 3 CPU steps, 30 GPU
steps).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
try:  # the GPU machines' image has no faiss; this benchmark never uses it, the package
    import faiss  # noqa: F401  (cvretrieval.embedders) imports it eagerly
except ImportError:
    import types

    sys.modules["faiss"] = types.ModuleType("faiss")
    print("faiss is not installed: a stub stands in (this benchmark does not use it)")

from cvretrieval.siamese.backbone import BackboneNet, fit_backbone  # noqa: E402

OUT = HERE / "out"


def generated_images(n_classes: int, per_class: int, size: int, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(n, size, size, 3)`` uint8 images and their labels: noise plus class-coloured blocks."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c in range(n_classes):
        colour = rng.integers(0, 256, 3)
        for _ in range(per_class):
            img = rng.integers(0, 64, (size, size, 3)).astype(np.int16)
            for _ in range(6):
                y, x = rng.integers(0, size - size // 4, 2)
                s = int(rng.integers(size // 8, size // 4))
                img[y : y + s, x : x + s] += (colour * rng.uniform(0.5, 1.0)).astype(np.int16)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(c)
    return np.stack(images), np.asarray(labels, np.int64)


def folder_images(root: Path, size: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` images of the class folders under ``root``, decoded at ``size``."""
    from cvretrieval.datasets import load_dataset
    from cvretrieval.siamese.backbone import decode_images
    from cvretrieval.siamese.data import dataset_labels

    paths, labels, _ = dataset_labels(load_dataset(root))
    keep = np.sort(np.random.default_rng(0).permutation(len(paths))[:limit])
    images, rows, _ = decode_images([paths[i] for i in keep], size, progress=False)
    return images, labels[keep][rows]


def run(device: str, steps: int, images: np.ndarray, labels: np.ndarray, weights: Path,
        args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then time ``steps`` training steps (one epoch) on ``device``."""
    common = dict(arch=args.arch, weights=weights, freeze=args.freeze, batch_p=args.batch_p,
                  batch_k=args.batch_k, patience=None, progress=False, device=device, epochs=1)
    fit_backbone(images, labels, steps_per_epoch=1, **common)  # warm-up
    t0 = time.perf_counter()
    _, info = fit_backbone(images, labels, steps_per_epoch=steps, **common)
    wall = time.perf_counter() - t0
    seconds = max(float(info["history"][1]["seconds"]), 1e-9)  # the training loop alone
    batch = args.batch_p * args.batch_k
    return {"device": info["device"], "steps": steps, "seconds": round(seconds, 2),
            "wall_seconds": round(wall, 2), "steps_per_s": round(steps / seconds, 3),
            "images_per_s": round(steps * batch / seconds, 1),
            "loss": info["history"][1]["loss"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--devices", default="auto",
                        help="comma-separated cpu,cuda; auto = cpu, plus cuda when visible")
    parser.add_argument("--steps-cpu", type=int, default=3)
    parser.add_argument("--steps-cuda", type=int, default=30)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-p", type=int, default=8)
    parser.add_argument("--batch-k", type=int, default=4)
    parser.add_argument("--freeze", type=int, default=3)
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--data", type=Path, default=None,
                        help="class folders to take images from (default: generated)")
    parser.add_argument("--out", type=Path, default=OUT / "gpu_backbone.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    import torch

    devices = (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]) \
        if args.devices == "auto" else [d.strip() for d in args.devices.split(",")]
    if args.data is not None:
        images, labels = folder_images(args.data, args.size, limit=args.classes * 8 * 4)
    else:
        most = max(args.steps_cuda if "cuda" in devices else 0, args.steps_cpu)
        per_class = max(2, -(-most * args.batch_p // args.classes) + 1) * args.batch_k
        images, labels = generated_images(args.classes, per_class, args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / f"{args.arch}-random.pt"
        torch.manual_seed(0)
        torch.save(BackboneNet(args.arch).trunk.state_dict(), weights)
        for device in devices:
            steps = args.steps_cuda if device == "cuda" else args.steps_cpu
            row = run(device, steps, images, labels, weights, args)
            rows.append(row)
            print(f"{args.arch} {device:>4}: {row['steps_per_s']:.3f} steps/s, "
                  f"{row['images_per_s']:.1f} images/s ({row['steps']} steps of "
                  f"{args.batch_p}x{args.batch_k} at {args.size}px in {row['seconds']} s; "
                  f"{row['wall_seconds']} s with model set-up)", flush=True)
    if len(rows) == 2:
        print(f"cuda / cpu: {rows[1]['steps_per_s'] / rows[0]['steps_per_s']:.1f}x")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    record = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                          "cpus": os.cpu_count(), "torch": torch.__version__,
                          "torch_threads": torch.get_num_threads(), "gpu": gpu,
                          "date": time.strftime("%Y-%m-%d")},
              "config": {k: str(v) for k, v in vars(args).items()}, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
