"""Evaluation reports on the real data sets, rendered to PNG to be looked at.

    python benchmarks/reports.py                     # all three, default features
    python benchmarks/reports.py --only ukbench --features bovw-sift

Runs ``cvret eval DATASET --features F --report DIR --report-png PNG`` on
``../shared/datasets/ukbench-56``, ``../shared/datasets/caltech101-dev`` and a
Copydays-style set made from caltech101-dev photos with ``cvret datasets make-copies``
(100 queries x 4 copies among 1,000 distractors). Everything goes to
``benchmarks/out/reports/<name>/`` (``index.html``, ``report.png``, ``eval.json``); the
pictures hold third-party images, so they stay out of the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import OUT, SHARED

BIN = Path(sys.executable).parent


def cvret(*args: object) -> None:
    subprocess.run([str(BIN / "cvret"), *map(str, args)], check=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["ukbench", "caltech", "copies"], action="append")
    ap.add_argument("--features", default=None,
                    help="one spec for every set (default: bovw-sift; bovw-orb on caltech)")
    args = ap.parse_args(argv)
    root = OUT / "reports"
    caltech = SHARED / "datasets" / "caltech101-dev"
    sets = {
        "ukbench": (SHARED / "datasets" / "ukbench-56", "bovw-sift"),
        "caltech": (caltech, "bovw-orb"),
        "copies": (root / "copies-data" / "gt.json", "bovw-sift"),
    }
    for name in args.only or list(sets):
        data, features = sets[name]
        features = args.features or features
        if name == "copies" and not data.exists():
            cvret("datasets", "make-copies", caltech, data.parent, "--queries", 100,
                  "--distractors", 1000, "--seed", 0, "-q")
        out = root / name
        cvret("eval", data, "--features", features, "--report", out, "--report-png",
              out / "report.png", "--json", out / "eval.json", "-q")
        m = json.loads((out / "eval.json").read_text())["metrics"]
        print(f"{name}: {features} mAP {m['mAP']:.4f} P@10 {m['P@10']:.4f} "
              f"N-S {m['ns_score']:.3f} -> {out / 'report.png'}", flush=True)


if __name__ == "__main__":
    main()
