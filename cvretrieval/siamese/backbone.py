"""End-to-end fine-tuning of a ResNet with GeM pooling (``cvret train siamese --backbone``).

The network is the retrieval CNN of Radenović, Tolias and Chum [1]_: a ResNet trunk, GeM
pooling with a learned exponent, L2 normalisation, then a learned linear projection and
L2 again. It trains with the same P×K batches, losses and mining as the projection head,
keeps the epoch with the best mAP on validation classes held out from training, and is
exported as two ONNX files that :class:`cvretrieval.embedders.siamese.SiameseEmbedder` runs
without PyTorch: ``backbone.onnx`` (image → GeM vector, the *base*) and ``head.onnx`` (the
projection).

The ResNet is defined here in plain PyTorch with torchvision's parameter names, so a
``torchvision.models.resnet50`` state dict (``torch.save(model.state_dict(), FILE)``) loads
with ``weights=FILE``; torchvision itself is not needed (its wheels do not import beside
the CPU build of torch these machines install). Nothing is ever downloaded: without
``weights`` the network starts from random weights, which only makes sense for trying the
mechanics.

References
----------
.. [1] F. Radenović, G. Tolias, O. Chum, "Fine-tuning CNN Image Retrieval with No Human
       Annotation", TPAMI 2018 (GeM pooling, learned whitening).
.. [2] K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition",
       CVPR 2016.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ModelError
from ._torch import F, nn, torch

logger = logging.getLogger(__name__)

#: block type and blocks per stage of each architecture (He et al., table 1)
ARCHS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}
#: the trunk's stages in order; ``freeze`` counts them from the input
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, downsample: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Any) -> Any:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, downsample: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)  # stride here: "v1.5"
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Any) -> Any:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


class ResNetTrunk(nn.Module):
    """A ResNet without its classifier, with torchvision's parameter names.

    Parameters
    ----------
    arch : str
        One of :data:`ARCHS`.

    Attributes
    ----------
    out_channels : int
        Channels of the last feature map (512 or 2048).
    """

    def __init__(self, arch: str = "resnet50") -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
        kind, blocks = ARCHS[arch]
        block = _Basic if kind == "basic" else _Bottleneck
        self.arch = arch
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for i, (n, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if j == 0 and (s != 1 or c_in != width * block.expansion):
                    down = nn.Sequential(
                        nn.Conv2d(c_in, width * block.expansion, 1, s, bias=False),
                        nn.BatchNorm2d(width * block.expansion),
                    )
                layers.append(block(c_in, width, s, down))
                c_in = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self) -> list[Any]:
        """The five stages of :data:`STAGES`, each a module."""
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: Any) -> Any:
        for stage in self.stages():
            x = stage(x)
        return x


class GeM(nn.Module):
    """Generalised-mean pooling ``(mean x^p)^(1/p)`` over the spatial axes, ``p`` learned."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * float(p))
        self.eps = eps

    def forward(self, x: Any) -> Any:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)


class BackboneNet(nn.Module):
    """Image batch ``(N, 3, H, W)`` (ImageNet-normalised) → L2-normalised GeM vectors.

    ``freeze`` first stages run without gradients (and their batch-norm statistics stay
    fixed, as in every stage: batches of a few classes are too small to estimate them).
    """

    def __init__(self, arch: str = "resnet50", p: float = 3.0, freeze: int = 3) -> None:
        super().__init__()
        if not 0 <= int(freeze) <= len(STAGES):
            raise ValueError(f"freeze must be between 0 and {len(STAGES)}, got {freeze!r}")
        self.trunk = ResNetTrunk(arch)
        self.pool = GeM(p)
        self.freeze = int(freeze)
        for stage in self.trunk.stages()[: self.freeze]:
            for param in stage.parameters():
                param.requires_grad_(False)

    @property
    def dim(self) -> int:
        return int(self.trunk.out_channels)

    def train(self, mode: bool = True) -> BackboneNet:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, x: Any) -> Any:
        stages = self.trunk.stages()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.freeze == 0):
            for stage in stages[: self.freeze]:
                x = stage(x)
        for stage in stages[self.freeze :]:
            x = stage(x)
        return F.normalize(self.pool(x), dim=1)


class RetrievalNet(nn.Module):
    """:class:`BackboneNet`, then a linear projection (identity-initialised) and L2."""

    def __init__(self, backbone: BackboneNet, dim: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        out = int(dim or backbone.dim)
        if out > backbone.dim:
            raise ValueError(f"dim={out} exceeds the backbone's {backbone.dim} channels")
        self.proj = nn.Linear(backbone.dim, out)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(out, backbone.dim))
            self.proj.bias.zero_()

    @property
    def out_dim(self) -> int:
        return int(self.proj.out_features)

    def forward(self, x: Any) -> Any:
        return F.normalize(self.proj(self.backbone(x)), dim=1)


def load_weights(trunk: ResNetTrunk, path: str | os.PathLike) -> dict[str, Any]:
    """Load a torchvision-style ResNet state dict from ``path`` into ``trunk``.

    Accepts a plain state dict or one under ``state_dict``/``model``, keys optionally
    prefixed ``module.`` (DataParallel) or ``trunk.``/``backbone.trunk.`` (our own
    networks); the classifier (``fc.*``) is ignored. Read with ``weights_only=True``: no
    code in the file runs.

    Returns
    -------
    dict
        ``path``, ``loaded`` (tensors loaded), ``ignored`` (keys skipped, e.g. ``fc``).

    Raises
    ------
    ModelError
        When the file is missing, unreadable, or its tensors do not fit the architecture.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"weights file {path} does not exist: pass a saved ResNet state dict")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals
        raise ModelError(
            f"cannot read {path} as a PyTorch state dict ({type(exc).__name__}: {exc}); save "
            "one with torch.save(model.state_dict(), FILE)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors")
    clean: dict[str, Any] = {}
    ignored = []
    for key, value in state.items():
        k = key
        for prefix in ("module.", "backbone.", "trunk."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        if k.startswith(("fc.", "pool.", "proj.")):
            ignored.append(key)
            continue
        clean[k] = value
    own = trunk.state_dict()
    missing = sorted(k for k in own if k not in clean and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in clean if k not in own)
    wrong = sorted(k for k in clean if k in own and tuple(clean[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected),
                               ("wrong shape", wrong)) if keys
        )
        raise ModelError(
            f"{path} is not a {trunk.arch} state dict ({detail}); pass the weights of the "
            f"same architecture as --backbone"
        )
    trunk.load_state_dict(clean, strict=False)
    return {"path": str(p), "loaded": len(clean), "ignored": len(ignored)}


def decode_images(
    paths: Sequence[Path], size: int, *, resize: str = "squash", max_side: int | None = 640,
    n_jobs: int = -1, progress: bool | None = True,
) -> tuple[NDArray[np.uint8], NDArray[np.int64], list[str]]:
    """Read and resize every image once: ``(n_ok, size, size, 3)`` RGB uint8, the rows of
    ``paths`` they come from, and the errors of the images that could not be read."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    def one(path: Path) -> NDArray[np.uint8] | str:
        from ..embedders.preprocess import resize_image
        from ..io import ImageReadError, read_image

        try:
            return resize_image(read_image(path, max_side=max_side), (size, size), resize)
        except (ImageReadError, ValueError, OSError) as exc:
            return f"{path}: {exc}"

    jobs = Parallel(n_jobs=n_jobs, batch_size=16, return_as="generator")(
        delayed(one)(p) for p in paths
    )
    images, rows, errors = [], [], []
    for i, out in enumerate(tqdm(jobs, total=len(paths), desc="images", unit="img",
                                 disable=not progress)):
        if isinstance(out, str):
            errors.append(out)
        else:
            images.append(out)
            rows.append(i)
    if not images:
        raise ModelError(f"none of the {len(paths)} training images could be read")
    return np.stack(images), np.asarray(rows, np.int64), errors


def _to_input(images: NDArray[np.uint8], flip: NDArray[np.bool_] | None = None) -> Any:
    from ..embedders.preprocess import prepare_batch

    if flip is not None and flip.any():
        images = images.copy()
        images[flip] = images[flip, :, ::-1]
    size = images.shape[1]
    x = prepare_batch(list(images), size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return torch.from_numpy(x)


def embed_images(
    model: Any, images: NDArray[np.uint8], batch_size: int = 16
) -> NDArray[np.float32]:
    """Run ``model`` (eval mode, no gradients, on its device) over uint8 images;
    ``(n, out)`` float32."""
    was = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.zeros(0)).device
    out = []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            x = _to_input(images[lo : lo + batch_size]).to(device)
            out.append(model(x).cpu().numpy())
    model.train(was)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def fit_backbone(
    images: NDArray[np.uint8],
    y: NDArray[np.integer],
    *,
    images_val: NDArray[np.uint8] | None = None,
    y_val: NDArray[np.integer] | None = None,
    arch: str = "resnet50",
    weights: str | os.PathLike | None = None,
    dim: int | None = None,
    freeze: int = 3,
    p: float = 3.0,
    loss: str = "triplet",
    margin: float | None = None,
    mining: str = "batch-hard",
    epochs: int = 10,
    steps_per_epoch: int | None = None,
    patience: int | None = 3,
    batch_p: int = 8,
    batch_k: int = 4,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    random_state: int = 0,
    progress: bool | None = True,
    device: str = "auto",
) -> tuple[Any, dict[str, Any]]:
    """Fine-tune a :class:`RetrievalNet` on decoded images; keep the best validation epoch.

    Epoch 0 is the network before training, so a fine-tuning that never beats the
    starting point returns it unchanged (``best_epoch == 0``).

    Parameters
    ----------
    images, y : (n, S, S, 3) uint8, (n,) int
        Training images (already at the input size) and their classes.
    images_val, y_val : optional
        Images of held-out classes; the epoch with the best mAP on them is kept.
    arch, weights, dim, freeze, p
        See :class:`BackboneNet`, :class:`RetrievalNet` and :func:`load_weights`.
    loss, margin, mining, batch_p, batch_k, weight_decay
        As for the projection head (:func:`cvretrieval.siamese.fit_head`).
    epochs : int, default 10
    steps_per_epoch : int, optional
        Batches per epoch (default: one pass over the training images).
    patience : int or None, default 3
    lr : float, optional
        AdamW learning rate; default 1e-5 with pretrained ``weights``, 1e-4 without.
    random_state : int, default 0
    device : {'auto', 'cpu', 'cuda'}, default 'auto'
        Where the network trains (``auto``: a CUDA GPU when PyTorch sees one); the
        returned model is on the CPU.

    Returns
    -------
    model : RetrievalNet
        In eval mode, with the best epoch's weights.
    info : dict
        ``history`` (per epoch: ``epoch``, ``loss``, ``val_mAP``, ``seconds``),
        ``best_epoch``, ``val_mAP``, ``base_val_mAP`` (epoch 0), ``margin``, ``lr``,
        ``weights`` (what :func:`load_weights` returned, or None), ``gem_p``,
        ``train_seconds``.
    """
    from tqdm.auto import tqdm

    from ..embedders.devices import torch_device
    from .data import class_retrieval_metrics
    from .losses import batch_loss
    from .mining import PKSampler

    dev = torch_device(device, torch)
    torch.manual_seed(random_state)
    rng = np.random.default_rng(random_state)
    backbone = BackboneNet(arch, p=p, freeze=freeze)
    loaded = load_weights(backbone.trunk, weights) if weights is not None else None
    if loaded is None:
        logger.warning("no --weights: the %s starts from random weights", arch)
    model = RetrievalNet(backbone, dim).to(dev)
    margin = float(margin if margin is not None else (0.2 if loss == "triplet" else 0.8))
    lr = float(lr if lr is not None else (1e-5 if loaded is not None else 1e-4))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sampler = PKSampler(y, batch_p=batch_p, batch_k=batch_k, random_state=random_state)
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    has_val = images_val is not None and y_val is not None and len(np.unique(y_val)) >= 2

    def validate() -> float | None:
        if not has_val or images_val is None or y_val is None:
            return None
        return float(class_retrieval_metrics(embed_images(model, images_val), y_val)["mAP"])

    t0 = time.perf_counter()
    try:
        base = validate()
        history: list[dict[str, Any]] = [
            {"epoch": 0, "loss": None, "val_mAP": base, "seconds": 0.0}
        ]
        best, best_epoch, best_state, since = base, 0, copy.deepcopy(model.state_dict()), 0
        for epoch in range(1, int(epochs) + 1):
            te = time.perf_counter()
            model.train()
            batches = list(sampler)
            if steps_per_epoch is not None:
                batches = batches[: int(steps_per_epoch)]
            losses = []
            bar = tqdm(batches, desc=f"{arch} epoch {epoch}", unit="batch", disable=not progress,
                       leave=False)
            for idx in bar:
                flip = rng.random(len(idx)) < 0.5
                emb = model(_to_input(images[idx], flip).to(dev))
                labels = torch.as_tensor(y[idx]).to(dev)
                value, _ = batch_loss(emb, labels, loss, margin, mining, rng)
                opt.zero_grad()
                value.backward()
                opt.step()
                losses.append(float(value.detach()))
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            score = validate()
            history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                            "val_mAP": score, "seconds": round(time.perf_counter() - te, 1)})
            logger.info("%s epoch %d: loss %.4f, validation mAP %s", arch, epoch,
                        history[-1]["loss"] or 0.0, score)
            if score is None or best is None or score > best:
                best, best_epoch, since = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since += 1
                if patience is not None and since >= patience:
                    break
        model.load_state_dict(best_state)
    finally:
        torch.set_num_threads(threads)
    model.cpu().eval()
    return model, {
        "history": history,
        "best_epoch": best_epoch,
        "val_mAP": best,
        "base_val_mAP": base,
        "margin": margin,
        "lr": lr,
        "device": dev,
        "weights": loaded,
        "gem_p": float(model.backbone.pool.p.detach()),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
