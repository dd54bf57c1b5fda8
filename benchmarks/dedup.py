"""Near-duplicate detection on a Copydays-style set: ``cvret dedup`` against imagededup's PHash.

Usage (from the checkout)::

    python benchmarks/dedup.py                                  # the documented run
    python benchmarks/dedup.py --queries 20 --distractors 80    # a quick check
    python benchmarks/dedup.py --features bovw-sift,vlad-sift,hog

A copy-detection set is built with :func:`cvretrieval.copies.make_copies` from
Caltech-101 photos (``--photos``, default ``../shared/datasets/caltech101-dev``):
``--queries`` originals with 4 copies each (crop, rotation, perspective, photometric,
JPEG; ``--strength harsh`` by default: 55-75 % crops, 10-30 degree rotations, every
copy downscaled 0.45-0.65 and saved at JPEG quality 12-25) and ``--distractors`` other
photos. The whole folder (originals, copies, distractors) is handed to each method.
Photos of the class folders named by ``--exclude-classes`` (default
``Faces,dollar_bill,yin_yang,watch``) are left out: in these folders the source photos
are near-duplicates of one another (Faces: a few people photographed many times in the
same office seconds apart; dollar_bill: one printed bill with pictures pasted in;
yin_yang: the same symbol; watch: catalogue shots of the same dials), found by both
methods in a first run, so they cannot be distractors (which by definition form no
pair). ``--exclude-classes ''`` keeps them.

``--clean-sources`` also drops, before any copy is made, every photo that a strict
geometric check finds to be the same picture as a photo already picked from its class
folder (:func:`strict_same_picture`: OpenCV SIFT, 4,000 key points on the unattacked
originals, ratio 0.7, RANSAC at 3 px, >= 60 inliers covering >= 30 % of the key points;
not the method under test or its settings); the next photo of make_copies' own order
takes its place. The dropped photos are printed and listed in the JSON output
(``benchmarks/out/dedup-clean.json``). The false pairs of every method are listed,
as source photos, in the JSON output.

A *true pair* is two images of the same original (the original and a copy, or two
copies); distractors form no pair. For cvretrieval a found pair is two images in one
group (the groups are what the user gets); for imagededup it is a pair it reports (its
output is per image, not grouped). Precision and recall are over pairs.

imagededup is run, when available, as a subprocess of a separate Python environment
(``--imagededup-python``, default ``$CVRET_IMAGEDEDUP_PYTHON`` or ``/tmp/idd/bin/python``),
e.g. made with ``python3 -m venv /tmp/idd && /tmp/idd/bin/pip install --no-deps imagededup
&& /tmp/idd/bin/pip install numpy scipy Pillow PyWavelets tqdm scikit-learn matplotlib``
(PHash needs no torch; its CNN module, which does, is stubbed out). It is never a
dependency of cvretrieval. Without it, its row is skipped with a message.

Timings are wall-clock, one run; results print as a markdown table and go to
``benchmarks/out/dedup.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import OUT, SHARED, machine, markdown_table, write_json

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))

from cvretrieval.copies import make_copies  # noqa: E402
from cvretrieval.dedup import DEFAULT_MIN_INLIER_RATIO, find_duplicates  # noqa: E402
from cvretrieval.io import list_images  # noqa: E402

PHASH_SCRIPT = r"""
import json, sys, time, types
try:
    from imagededup.methods import PHash
except ImportError:  # installed without torch: PHash does not need it
    for name in ("imagededup.utils.models", "imagededup.methods.cnn"):
        stub = types.ModuleType(name)
        stub.CustomModel = stub.CNN = None
        sys.modules[name] = stub
    from imagededup.methods import PHash
folder, threshold = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
hasher = PHash(verbose=False)
encodings = hasher.encode_images(image_dir=folder, recursive=True)
found = hasher.find_duplicates(encoding_map=encodings, max_distance_threshold=threshold)
seconds = time.perf_counter() - t0
json.dump({"duplicates": found, "seconds": seconds}, sys.stdout)
"""


#: The strict check of ``--clean-sources`` (not the method under test: OpenCV SIFT with
#: 4,000 key points on the unattacked original at its own resolution, Lowe ratio 0.7,
#: RANSAC homography at 3 px): two source photos are near-duplicates when the homography
#: has at least STRICT_INLIERS inliers (5x cvret's default --min-inliers) covering at
#: least STRICT_COVER of the smaller key-point set.
STRICT_INLIERS, STRICT_COVER = 60, 0.3


def _strict_features(path: Path, cache: dict[Path, Any]) -> Any:
    import cv2
    import numpy as np

    if path not in cache:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        kp, desc = (cv2.SIFT_create(nfeatures=4000).detectAndCompute(gray, None)
                    if gray is not None else ((), None))
        cache[path] = (np.float32([k.pt for k in kp]).reshape(-1, 2), desc)
    return cache[path]


def strict_same_picture(a: Path, b: Path, cache: dict[Path, Any]) -> tuple[int, float]:
    """(homography inliers, inliers / smaller key-point count) of two source photos."""
    import cv2

    (ka, da), (kb, db) = _strict_features(a, cache), _strict_features(b, cache)
    if da is None or db is None or len(ka) < 8 or len(kb) < 8:
        return 0, 0.0
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < 0.7 * m[1].distance]
    if len(good) < 8:
        return 0, 0.0
    _, mask = cv2.findHomography(ka[[g.queryIdx for g in good]], kb[[g.trainIdx for g in good]],
                                 cv2.RANSAC, 3.0, maxIters=2000, confidence=0.999)
    n = int(mask.sum()) if mask is not None else 0
    return n, n / min(len(ka), len(kb))


def clean_sources(photos: list[Path], needed: int, seed: int,
                  margin: int = 10) -> tuple[list[Path], list[dict[str, Any]]]:
    """The photos make_copies would pick, minus near-duplicates of an earlier pick.

    Walks the photos in make_copies' own order (``default_rng(seed).permutation``) and
    drops a photo when :func:`strict_same_picture` says it is the same picture as a photo
    already kept from the same class folder, until ``needed + margin`` are kept. Returns
    ``(pool, dropped)``: ``pool`` arranged so that make_copies (same seed) visits it in
    the kept order, so the cleaned set differs from the plain one only where a photo was
    dropped (the next photo of the walk takes its place).
    """
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(photos))
    cache: dict[Path, Any] = {}
    kept: list[Path] = []
    dropped: list[dict[str, Any]] = []
    for idx in order.tolist():
        if len(kept) >= needed + margin:
            break
        photo = photos[idx]
        for other in (k for k in kept if k.parent == photo.parent):
            inliers, cover = strict_same_picture(other, photo, cache)
            if inliers >= STRICT_INLIERS and cover >= STRICT_COVER:
                dropped.append({"photo": str(photo), "same_as": str(other),
                                "inliers": inliers, "cover": round(cover, 3)})
                break
        else:
            kept.append(photo)
    pool: list[Path] = [Path()] * len(kept)
    for i, slot in enumerate(np.random.default_rng(seed).permutation(len(kept)).tolist()):
        pool[slot] = kept[i]
    return pool, dropped


def truth_pairs(root: Path) -> tuple[set[frozenset[str]], int]:
    """(true pairs as frozensets of resolved paths, number of images in the folder)."""
    gt = json.loads((root / "gt.json").read_text())
    pairs: set[frozenset[str]] = set()
    for q, g in zip(gt["qimlist"], gt["gnd"], strict=True):
        members = [q] + [gt["imlist"][i] for i in g["ok"]]
        paths = [str((root / m).resolve()) for m in members]
        pairs.update(frozenset(p) for p in itertools.combinations(paths, 2))
    return pairs, len(gt["imlist"]) + len(gt["qimlist"])


def score(found: set[frozenset[str]], truth: set[frozenset[str]]) -> dict[str, Any]:
    hits = len(found & truth)
    return {
        "precision": hits / len(found) if found else 1.0,
        "recall": hits / len(truth) if truth else 1.0,
        "found_pairs": len(found),
        "true_pairs_found": hits,
    }


def false_pairs(found: set[frozenset[str]], truth: set[frozenset[str]],
                root: Path) -> list[list[str]]:
    """Found pairs that are not true, as the source photos they were made from."""
    manifest = json.loads((root / "copies.json").read_text())
    sources = {**manifest["query_sources"], **manifest["distractor_sources"]}

    def source(path: str) -> str:
        rel = Path(path).relative_to(root.resolve()).as_posix()
        if rel not in sources:  # a copy: gallery/qNNNN_cK_attack.jpg
            rel = f"queries/{Path(rel).name[:5]}.jpg"
        return str(sources.get(rel, rel))

    return sorted(sorted(source(p) for p in pair) for pair in found - truth)


def run_ours(root: Path, features: str, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = find_duplicates(root, features, threshold=args.threshold, k=args.k,
                          min_inliers=args.min_inliers, min_inlier_ratio=args.min_inlier_ratio,
                          n_jobs=args.n_jobs, progress=False)
    seconds = time.perf_counter() - t0
    return {"found": res.pair_set(), "seconds": seconds, "config": res.config,
            "failed": res.failed}


def run_phash(root: Path, python: str, threshold: int) -> dict[str, Any] | None:
    if not Path(python).exists():
        print(f"imagededup skipped: no Python at {python} (see this script's docstring to "
              "make one, or pass --imagededup-python)", flush=True)
        return None
    proc = subprocess.run([python, "-c", PHASH_SCRIPT, str(root), str(threshold)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"imagededup skipped: it failed in {python}: {last}", flush=True)
        return None
    doc = json.loads(proc.stdout)
    found = {
        frozenset((str((root / a).resolve()), str((root / b).resolve())))
        for a, dups in doc["duplicates"].items()
        for b in dups
        if a != b
    }
    return {"found": found, "seconds": doc["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=SHARED / "datasets" / "caltech101-dev")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--distractors", type=int, default=400)
    parser.add_argument("--strength", default="harsh", choices=["default", "harsh"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="bovw-sift",
                        help="comma-separated embedder specs for cvret dedup")
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--min-inliers", type=int, default=12)
    parser.add_argument("--min-inlier-ratio", type=float, default=DEFAULT_MIN_INLIER_RATIO)
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--phash-threshold", type=int, default=10,
                        help="imagededup's max_distance_threshold (its default: 10)")
    parser.add_argument("--imagededup-python",
                        default=os.environ.get("CVRET_IMAGEDEDUP_PYTHON", "/tmp/idd/bin/python"))
    parser.add_argument("--exclude-classes", default="Faces,dollar_bill,yin_yang,watch",
                        help="comma-separated class folders whose photos are not used")
    parser.add_argument("--clean-sources", action="store_true",
                        help="drop source photos that a strict geometric check (not the "
                             "method under test) finds to be the same picture as another "
                             "source photo of their class, before any copy is made")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the set is written (default: a temporary folder)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    excluded = {c.strip() for c in args.exclude_classes.split(",") if c.strip()}
    photos = [p for p in list_images(args.photos) if p.parent.name not in excluded]
    if not photos:
        sys.exit(f"no photos under {args.photos}: pass --photos")
    with tempfile.TemporaryDirectory(prefix="cvret-dedup-") as tmp:
        root = (args.workdir or Path(tmp)) / "set"
        print(f"building a {args.strength} copy set from {args.photos} in {root}", flush=True)
        dropped: list[dict[str, Any]] = []
        if args.clean_sources:
            photos, dropped = clean_sources(photos, args.queries + args.distractors, args.seed)
            print(f"--clean-sources dropped {len(dropped)} photo(s): "
                  + ", ".join(f"{Path(d['photo']).parent.name}/{Path(d['photo']).name} "
                              f"(= {Path(d['same_as']).name}, {d['inliers']} inliers)"
                              for d in dropped), flush=True)
        make_copies(photos, root, n_queries=args.queries, n_distractors=args.distractors,
                    copies_per_query=4, seed=args.seed, strength=args.strength)
        truth, n_images = truth_pairs(root)
        rows, details, wrong, unreadable = [], {}, {}, {}
        for features in [f.strip() for f in args.features.split(",") if f.strip()]:
            r = run_ours(root, features, args)
            row = {"method": f"cvret dedup --features {features}", **score(r["found"], truth),
                   "seconds": round(r["seconds"], 1)}
            rows.append(row)
            details[features] = r["config"]
            unreadable[features] = r["failed"]
            wrong[features] = false_pairs(r["found"], truth, root)
            print(json.dumps(row), flush=True)
        ph = run_phash(root, args.imagededup_python, args.phash_threshold)
        if ph is not None:
            row = {"method": f"imagededup PHash (max_distance_threshold={args.phash_threshold})",
                   **score(ph["found"], truth), "seconds": round(ph["seconds"], 1)}
            rows.append(row)
            wrong["phash"] = false_pairs(ph["found"], truth, root)
            print(json.dumps(row), flush=True)
    table = markdown_table(rows, ["method", "precision", "recall", "found_pairs", "seconds"])
    print(f"\n{n_images} images, {len(truth)} true pairs ({args.queries} originals x 4 "
          f"{args.strength} copies, {args.distractors} distractors"
          f"{', sources cleaned' if args.clean_sources else ''})\n")
    print(table)
    out_name = "dedup-clean.json" if args.clean_sources else "dedup.json"
    write_json(OUT / out_name, {"args": {k: str(v) for k, v in vars(args).items()},
                                "images": n_images, "true_pairs": len(truth), "rows": rows,
                                "configs": details, "false_pairs": wrong,
                                "dropped_sources": dropped, "unreadable": unreadable,
                                "machine": machine()})


if __name__ == "__main__":
    main()
