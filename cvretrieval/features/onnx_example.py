"""A small ONNX local-feature detector built from scratch, for tests, docs and trying plug-ins.

:func:`build_harris_onnx` writes a SuperPoint-shaped model, ``image (1, 1, H, W) float
in [0, 1] -> keypoints (N, 2) xy, scores (N,), descriptors (N, 25)``, with no learned
weight: Harris corners (Sobel gradients, Gaussian-weighted structure tensor), non-maximum
suppression by max-pooling, and as descriptor the blurred intensities on a 5 x 5 grid
around each corner, mean-subtracted and L2-normalised. It is neither rotation- nor
scale-invariant (small rotations and crops are fine); it exists to exercise the ONNX
path end to end without downloading a network. Needs the ``onnx`` package.

Examples
--------
>>> import tempfile, numpy as np
>>> from cvretrieval.features.detectors import make_detector
>>> path = build_harris_onnx(tempfile.mkdtemp() + "/harris.onnx")
>>> det = make_detector(f"onnx:{path}", n_features=200)
>>> det.descriptor_dim, det.binary
(25, False)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["build_harris_onnx"]


def _gauss(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def build_harris_onnx(
    path: str | Path,
    *,
    nms: int = 7,
    step: int = 3,
    sigma: float = 1.5,
    rel_threshold: float = 0.01,
) -> Path:
    """Write the Harris detector model to ``path`` and return the path.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file to write.
    nms : int, default 7
        Side of the non-maximum-suppression window (odd).
    step : int, default 3
        Pixel spacing of the 5 x 5 descriptor grid.
    sigma : float, default 1.5
        Gaussian of the structure tensor and of the descriptor's blur.
    rel_threshold : float, default 0.01
        Corners weaker than this fraction of the image's strongest are dropped.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8
    grad = np.stack([sobel, sobel.T])[:, None]  # (2, 1, 3, 3): Ix, Iy
    gk = _gauss(7, sigma)[None, None]
    # descriptor: blurred pixel at offsets (dy, dx) on a 5 x 5 grid, one kernel per offset
    side = 4 * step + 7
    blur = _gauss(7, sigma)
    kern = np.zeros((25, 1, side, side), np.float32)
    for n, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)):
        cy, cx = side // 2 + dy * step, side // 2 + dx * step
        kern[n, 0, cy - 3 : cy + 4, cx - 3 : cx + 4] = blur
    inits = [
        numpy_helper.from_array(grad, "w_grad"),
        numpy_helper.from_array(np.repeat(gk, 3, axis=0), "w_gauss3"),
        numpy_helper.from_array(kern, "w_desc"),
        numpy_helper.from_array(np.array([0.04], np.float32), "k"),
        numpy_helper.from_array(np.array([rel_threshold], np.float32), "rel"),
        numpy_helper.from_array(np.array([0, 2, 3], np.int64), "bxy_rows"),
        numpy_helper.from_array(np.array([3, 2], np.int64), "xy_rows"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "ax01"),
        numpy_helper.from_array(np.array([1e-6], np.float32), "eps"),
        numpy_helper.from_array(np.array([0, 0, side // 2, side // 2] * 2, np.int64), "pd"),
    ]
    pad_n = [nms // 2] * 4

    def reflect(x: str, r: int) -> onnx.NodeProto:  # zero padding would make border corners
        inits.append(numpy_helper.from_array(np.array([0, 0, r, r] * 2, np.int64), f"p{x}"))
        return helper.make_node("Pad", [x, f"p{x}"], [f"{x}_p"], mode="reflect")

    nodes = [
        reflect("image", 1),
        helper.make_node("Conv", ["image_p", "w_grad"], ["g"]),  # (1, 2, H, W)
        helper.make_node("Split", ["g"], ["ix", "iy"], axis=1, num_outputs=2),
        helper.make_node("Mul", ["ix", "ix"], ["ixx"]),
        helper.make_node("Mul", ["iy", "iy"], ["iyy"]),
        helper.make_node("Mul", ["ix", "iy"], ["ixy"]),
        helper.make_node("Concat", ["ixx", "iyy", "ixy"], ["t"], axis=1),
        reflect("t", 3),
        helper.make_node("Conv", ["t_p", "w_gauss3"], ["ts"], group=3),
        helper.make_node("Split", ["ts"], ["a", "b", "c"], axis=1, num_outputs=3),
        helper.make_node("Mul", ["a", "b"], ["ab"]),
        helper.make_node("Mul", ["c", "c"], ["cc"]),
        helper.make_node("Sub", ["ab", "cc"], ["det"]),
        helper.make_node("Add", ["a", "b"], ["tr"]),
        helper.make_node("Mul", ["tr", "tr"], ["tr2"]),
        helper.make_node("Mul", ["tr2", "k"], ["ktr2"]),
        helper.make_node("Sub", ["det", "ktr2"], ["r"]),  # Harris response (1, 1, H, W)
        helper.make_node("MaxPool", ["r"], ["rmax"], kernel_shape=[nms, nms], pads=pad_n),
        helper.make_node("ReduceMax", ["r"], ["top"], keepdims=0),
        helper.make_node("Mul", ["top", "rel"], ["thr"]),
        helper.make_node("Equal", ["r", "rmax"], ["is_max"]),
        helper.make_node("Greater", ["r", "thr"], ["strong"]),
        helper.make_node("And", ["is_max", "strong"], ["keep"]),
        helper.make_node("NonZero", ["keep"], ["nz"]),  # (4, N): b, c, y, x
        helper.make_node("Gather", ["nz", "bxy_rows"], ["bxy"], axis=0),
        helper.make_node("Transpose", ["bxy"], ["idx"], perm=[1, 0]),  # (N, 3)
        helper.make_node("Gather", ["nz", "xy_rows"], ["xy"], axis=0),
        helper.make_node("Transpose", ["xy"], ["xy_t"], perm=[1, 0]),
        helper.make_node("Cast", ["xy_t"], ["keypoints"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["r", "ax1"], ["r3"]),  # (1, H, W)
        helper.make_node("GatherND", ["r3", "idx"], ["scores"]),
        helper.make_node("Pad", ["image", "pd"], ["image_d"], mode="edge"),
        helper.make_node("Conv", ["image_d", "w_desc"], ["dmap"]),  # (1, 25, H, W)
        helper.make_node("Transpose", ["dmap"], ["dmap_t"], perm=[0, 2, 3, 1]),
        helper.make_node("GatherND", ["dmap_t", "idx"], ["raw"]),  # (N, 25)
        helper.make_node("ReduceMean", ["raw", "ax1"], ["mu"], keepdims=1),
        helper.make_node("Sub", ["raw", "mu"], ["centred"]),
        helper.make_node("ReduceL2", ["centred", "ax1"], ["norm"], keepdims=1),
        helper.make_node("Add", ["norm", "eps"], ["norm_e"]),
        helper.make_node("Div", ["centred", "norm_e"], ["descriptors"]),
    ]
    graph = helper.make_graph(
        nodes,
        "harris_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, "H", "W"])],
        [
            helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["N", 25]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
