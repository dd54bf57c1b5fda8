"""Peak memory of ``cvret eval`` on precomputed vectors: N queries against N gallery vectors.

    python benchmarks/eval_memory.py                     # 50,000 x 50,000, 128-d, 1,000 classes
    python benchmarks/eval_memory.py --n 5000 --classes 100

Builds, in a temporary folder, a class-folders data set of ``--n`` tiny 8x8 PNGs
(``--classes`` folders; the reader only lists the files) and an ``.npz`` of
``--dim``-d vectors (class centre + noise, L2-normalised; every image is a query),
then runs ``cvret eval DIR --format class-folders --vectors V.npz --json R.json -q``
in a subprocess under ``/usr/bin/time -v`` and prints its peak RSS, its wall time,
the mAP, and the peak RSS of loading the data set alone (the ground truth's share).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _peak_kb(stderr: str) -> int:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    return int(m.group(1)) if m else -1


def _timed(cmd: list[str]) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return _peak_kb(proc.stderr), wall, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=1_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import cv2

    rng = np.random.default_rng(args.seed)
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with tempfile.TemporaryDirectory(prefix="cvret-evalmem-") as tmp:
        root = Path(tmp) / "data"
        labels = np.arange(args.n) % args.classes
        for c in range(args.classes):
            (root / f"c{c:05d}").mkdir(parents=True)
        names = [f"c{c:05d}/{i:07d}.png" for i, c in enumerate(labels)]
        for name in names:
            (root / name).write_bytes(png)
        order = np.argsort(names, kind="stable")  # the reader's order: sorted relative paths
        centres = rng.normal(size=(args.classes, args.dim)).astype(np.float32)
        x = centres[labels[order]] + 1.5 * rng.normal(size=(args.n, args.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        npz = Path(tmp) / "v.npz"
        np.savez(npz, gallery=x, queries=x, metric="ip")
        out = Path(tmp) / "r.json"
        py = sys.executable
        load_kb, _, _ = _timed([py, "-c", "import sys; from cvretrieval.datasets import "
                                "load_dataset; load_dataset(sys.argv[1], format='class-folders')",
                                str(root)])
        cvret = [py, "-c", "from cvretrieval.cli import main; main(prog_name='cvret')"]
        cmd = [*cvret, "eval", str(root), "--format", "class-folders",
               "--vectors", str(npz), "--json", str(out), "-q"]
        peak_kb, wall, _ = _timed(cmd)
        report = json.loads(out.read_text())
        print(f"N = {args.n:,} queries x {args.n:,} gallery vectors, d = {args.dim}, "
              f"{args.classes:,} classes")
        print(f"cvret eval --vectors: peak RSS {peak_kb / 1024:.0f} MiB, wall {wall:.1f} s, "
              f"mAP {report['metrics']['mAP']:.4f}")
        print(f"load_dataset alone (python + ground truth): peak RSS {load_kb / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
