"""Where an ORB-BoVW image's time goes, against the raw OpenCV loop of ``scale.py``.

One thread, the same images, each step timed on its own (best of ``--repeat``):

* raw: colour decode + cvtColor + ORB (what ``scale.py``'s raw loop does per image),
  and the bare ``detectAndCompute`` on the decoded gray image;
* ours: the gray decode of :func:`cvretrieval.io.read_bytes_and_image`, the detector of
  the ``bovw`` embedder (``detectAndCompute`` plus the key-point arrays), and the exact
  assignment of the descriptors to a 1,000-word Hamming vocabulary (Faiss
  ``IndexBinaryFlat``), with binary HNSW over the same words for comparison (time and
  agreement with the exact word).

    python benchmarks/orb_parts.py                      # 300 images of the scale pool
    python benchmarks/orb_parts.py --images DIR --n 500

The vocabulary is fitted here (k-majority, 1,000 words) on the images' own descriptors,
as ``cvret index --features bovw --detector orb --words 1000`` does on its sample.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT, machine, markdown_table, write_json


def best_ms(fn: Callable[[], Any], n: int, repeat: int) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``n`` images), in ms an image."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return round(best / n * 1e3, 3)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path,
                    default=Path(tempfile.gettempdir()) / "cvret-scale" / "pool",
                    help="A folder of photos (default: the pool scale.py generates).")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT / "orb_parts.json")
    args = ap.parse_args(argv)

    import cv2
    import faiss

    from cvretrieval.features.detectors import OpenCVDetector
    from cvretrieval.features.kmajority import HammingVocabulary
    from cvretrieval.io import list_images, read_bytes_and_image

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    paths = [str(p) for p in list_images(args.images)[: args.n]]
    if not paths:
        raise SystemExit(f"no images under {args.images}: run benchmarks/scale.py first "
                         "or pass --images")
    n = len(paths)
    orb = cv2.ORB_create(1000)
    det = OpenCVDetector("orb", 1000)
    grays = [read_bytes_and_image(p, max_side=640, grayscale=True)[2] for p in paths]
    feats = [det.detect(g) for g in grays]
    descs = [f.descriptors for f in feats if len(f.descriptors)]
    vocab = HammingVocabulary(1000, random_state=0).fit(np.vstack(descs))
    words = np.ascontiguousarray(vocab.centers_)
    flat = faiss.IndexBinaryFlat(8 * words.shape[1])
    flat.add(words)
    exact = [flat.search(d, 1)[1][:, 0] for d in descs]

    def raw_loop() -> None:
        for p in paths:
            img = cv2.imread(p, cv2.IMREAD_COLOR)
            orb.detectAndCompute(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), None)

    rows: list[dict[str, Any]] = [
        {"step": "raw: colour decode + cvtColor + ORB", "ms": best_ms(raw_loop, n, args.repeat)},
        {"step": "raw: detectAndCompute alone", "ms": best_ms(
            lambda: [orb.detectAndCompute(g, None) for g in grays], n, args.repeat)},
        {"step": "ours: read + gray decode", "ms": best_ms(
            lambda: [read_bytes_and_image(p, max_side=640, grayscale=True) for p in paths],
            n, args.repeat)},
        {"step": "ours: detector (ORB + key-point arrays)", "ms": best_ms(
            lambda: [det.detect(g) for g in grays], n, args.repeat)},
        {"step": "ours: exact assignment (IndexBinaryFlat)", "ms": best_ms(
            lambda: [flat.search(d, 1) for d in descs], n, args.repeat), "agreement": 1.0},
    ]
    for m, ef in ((16, 16), (32, 64)):
        hnsw = faiss.IndexBinaryHNSW(8 * words.shape[1], m)
        hnsw.add(words)
        hnsw.hnsw.efSearch = ef
        got = [hnsw.search(d, 1)[1][:, 0] for d in descs]
        agree = float(np.mean(np.concatenate([a == b for a, b in zip(got, exact, strict=True)])))
        rows.append({"step": f"binary HNSW{m}, efSearch {ef}", "ms": best_ms(
            lambda h=hnsw: [h.search(d, 1) for d in descs], n, args.repeat),
            "agreement": round(agree, 3)})
    ours = rows[2]["ms"] + rows[3]["ms"] + rows[4]["ms"]
    rows.append({"step": "ours: decode + detector + exact assignment", "ms": round(ours, 3)})
    rows.append({"step": "ceiling of the ratio (raw loop / ours)",
                 "ms": round(rows[0]["ms"] / ours, 3)})
    print(f"{n} images, {np.mean([len(d) for d in descs]):.0f} descriptors an image, "
          f"1,000 words")
    print(markdown_table(rows, ["step", "ms", "agreement"]))
    write_json(args.out, {"machine": machine(), "images": n, "rows": rows})


if __name__ == "__main__":
    main()
