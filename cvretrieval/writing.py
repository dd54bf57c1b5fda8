"""Writing a Retriever's bundle: build, add, remove, compact, save.

A mixin of :class:`cvretrieval.retriever.Retriever`: each operation runs the pipeline
(:mod:`cvretrieval.pipeline`) into new segments inside a
:class:`~cvretrieval.bundle.BundleWriter` (one writer at a time) and commits by replacing
the manifest, then the retriever re-reads what was committed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import __version__
from ._files import resolve_paths
from .bundle import Bundle, BundleWriter, folder_checksums, item_codec
from .bundle import build as bb
from .bundle.catalog import STATUSES
from .bundle.segments import segment_name
from .errors import BundleError, ImageReadError, NotFittedError
from .io import scan_images
from .pipeline import fit_on_sample

logger = logging.getLogger("cvretrieval.retriever")


class BundleWriting:
    """Build, grow and shrink the bundle of a :class:`~cvretrieval.retriever.Retriever`."""

    # provided by Retriever
    embedder: Any
    bundle_: Bundle | None
    last_run_: dict[str, Any]

    def _as_paths(self, images: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
        """The images to embed; a folder is scanned, and the entries it skips (links in a
        loop, FIFOs, ...) are kept in ``self._unlisted`` to be reported with the run."""
        self._unlisted: list[dict[str, str]] = []
        if isinstance(images, (str, os.PathLike)):
            root = Path(images)
            if root.is_dir():
                paths, skipped = scan_images(root)
                self._unlisted = [{"path": str(p), "error": why} for p, why in skipped]
                for entry in self._unlisted:
                    logger.warning("skipped %s: %s", entry["path"], entry["error"])
            else:
                paths = [root]
        else:
            paths = [Path(p) for p in images]
        if not paths:
            why = f" ({len(self._unlisted)} entries skipped: {self._unlisted[0]['error']})" \
                if self._unlisted else ""
            raise ValueError(f"no images to index in {images!s}: the folder holds no image "
                             f"files{why}")
        return paths

    def _store_writer(self) -> Any:
        if not self.store_features:
            return None
        from .featurestore import FeatureStoreWriter

        sv = self.sv_features
        return lambda d: FeatureStoreWriter(d, max_keypoints=sv.n_features,
                                            descriptors="none" if sv.mode == "words" else "auto",
                                            words=sv.uses_words, meta=sv.config())

    def has_features(self, vector: Any) -> bool:
        """An image whose vector is all zero (or whose item the embedder says is empty)
        had nothing to describe it: it is catalogued as ``nofeatures``, not indexed."""
        if self.items:
            return bool(self.embedder.has_features(vector))
        return not _is_zero(vector)

    def _index_kind(self) -> str:
        return "items" if self.items else "sparse" if self.sparse else "faiss"

    # --- building -----------------------------------------------------------------------
    def fit(self, images: str | os.PathLike | Sequence[str | os.PathLike], *,
            progress: bool | None = None) -> Any:
        """Fit the embedder only (e.g. a vocabulary) on a random sample of ``images``."""
        paths = self._as_paths(images)
        fit_on_sample(self._pipeline(), self.embedder, [(i, str(p), None)
                                                        for i, p in enumerate(paths)],
                      max_side=self.max_side, random_state=self.random_state, fit_only=True,
                      cache=self._cache(), progress=progress)
        return self

    def build(self, images: str | os.PathLike | Sequence[str | os.PathLike], *,
              output: str | os.PathLike | None = None, progress: bool | None = None) -> Any:
        """Fit on a sample, embed every image into the bundle ``output`` and index it.

        Without ``output`` the bundle lives in a temporary folder removed with this object
        (:meth:`save` copies it). An existing bundle at ``output`` is replaced atomically.
        """
        from ._dask import scheduler_session

        if getattr(self.embedder, "takes_paths", False):
            raise ValueError(f"{self.embedder.name} scores vectors computed elsewhere: use it "
                             "with `cvret eval` or `cvret bench`, it has no images to index")
        if self.whiten_on and not self.pca_whiten:
            raise ValueError("--whiten-on needs --pca-whiten D (the whitening it learns)")
        paths = self._as_paths(images)
        validate = getattr(self.embedder, "validate", None)
        if callable(validate):  # a missing model fails once, not once per image
            validate()
        t0 = time.perf_counter()
        root = Path(output) if output is not None else self._scratch()
        tasks = [(i, str(p), None) for i, p in enumerate(paths)]
        with scheduler_session(self._pipeline().scheduler), \
                BundleWriter(root, timeout=self.lock_timeout) as w:
            whitening = self._new_whitening()
            t_fit = time.perf_counter()
            pipe = self._pipeline()
            on_gallery = whitening if not self.whiten_on else None
            sample = fit_on_sample(pipe, self.embedder, tasks, max_side=self.max_side,
                                   random_state=self.random_state, whitening=on_gallery,
                                   cache=self._cache(), progress=progress)
            if whitening is not None and on_gallery is None:
                self._fit_whitening_on(whitening, progress)
            self.whitening_ = whitening
            fit_s = time.perf_counter() - t_fit
            emb_dir = w.new_name("embedder")
            self.embedder.save(root / emb_dir)
            wh_dir = None
            if whitening is not None:
                wh_dir = w.new_name("whitening")
                whitening.save(root / wh_dir)
            cat_name = w.new_name("catalog", ".sqlite")
            manifest = self._manifest_base(root, emb_dir, wh_dir, cat_name)
            records, failures = self._stream(w, root / cat_name, tasks, paths, 0, sample,
                                             progress)
            if not any(r["n"] for r in records):
                first = failures[0]["error"] if failures else "no image had features"
                raise ImageReadError(f"none of the {len(paths)} images could be indexed; "
                                     f"first error: {first}")
            t_index = time.perf_counter()
            manifest["segments"], manifest["next_id"] = records, len(paths)
            manifest["index"] = self._train_and_shard(root, manifest, w)
            index_s = time.perf_counter() - t_index
            self._commit(w, manifest)
        self._open(root)
        self._report("build", len(paths), failures, t0, fit_s, index_s)
        return self

    def _scratch(self) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix="cvret-bundle-"))
        weakref.finalize(self, shutil.rmtree, tmp, True)
        return tmp / "bundle"

    def _fit_whitening_on(self, whitening: Any, progress: bool | None) -> None:
        """Learn the whitening on a separate set of images (``whiten_on``): a random sample
        of at most 5,000 of them, embedded through the pipeline with the fitted embedder."""
        from .pipeline import CORPUS_SAMPLE, embed_paths, sample_positions

        root = Path(self.whiten_on)
        paths = scan_images(root)[0] if root.is_dir() else [root]
        if not paths:
            raise ValueError(f"--whiten-on {root}: no images there to learn the whitening on")
        pick = sample_positions(len(paths), max(CORPUS_SAMPLE, 5000), self.random_state, salt=2)
        X, _, errors = embed_paths(self.embedder, [paths[i] for i in pick], fit=False,
                                   max_side=self.max_side, n_jobs=self.n_jobs,
                                   random_state=self.random_state, progress=progress)
        if len(X) < 2:
            raise ValueError(f"--whiten-on {root}: only {len(X)} of its images could be "
                             "embedded; a whitening needs more")
        whitening.fit(X)

    def _new_whitening(self) -> Any:
        if not self.pca_whiten:
            return None
        from .whitening import PCAWhitening

        return PCAWhitening(n_components=int(self.pca_whiten),
                            shrinkage=float(self.whiten_shrinkage),
                            random_state=self.random_state)

    def _stream(self, w: BundleWriter, catalog_path: Path, tasks: list[Any], paths: list[Path],
                first_id: int, done: dict[int, Any], progress: bool | None) -> tuple[list, list]:
        """Run the pipeline over ``tasks`` (except those in ``done``, whose reduced results
        are finished here) and write the results to new segments and catalog rows."""
        job = self._job("encode", keypoints=self.store_features)
        todo = [t for t in tasks if t[0] not in done]
        if done and self.store_features:  # the sample's key points were not kept: redo them
            todo, done = tasks, {}
        finished: dict[int, Any] = {}
        if done:
            good = [p for p, it in done.items() if it.error is None]
            for p, v in zip(good, job.finish([done[p].value for p in good]), strict=True):
                done[p].value = v
            finished = done
        stream = self._pipeline().map(job, todo, progress=progress, desc="embedding")

        def ordered() -> Any:
            for pos in range(len(tasks)):
                it = finished.pop(pos) if pos in finished else next(stream)
                it.position = pos
                yield it

        sparse, items = self.sparse, (item_codec() if self.items else None)
        with bb.Catalog(catalog_path, first_id, write=True) as catalog:
            return bb.write_segments(
                lambda: w.new_segment(sparse=sparse, dim=self._vector_dim(), items=items),
                catalog,
                ordered(), resolve_paths(paths), first_id,
                store=self._store_writer(), has_features=self.has_features)

    def _vector_dim(self) -> int:
        return int(self.embedder.dim) if self.sparse or self.items else self.dim

    def _train_and_shard(self, root: Path, manifest: dict[str, Any], w: BundleWriter,
                         template: Any = None, only: set[int] | None = None) -> dict[str, Any]:
        """Train the index on a sample of the stored vectors (unless ``template`` is given),
        save the trained empty index and each segment's shard; returns the manifest's
        ``index`` record."""
        bundle = Bundle(root, {**manifest, "index": {"kind": self._index_kind(),
                                                      "dim": self._vector_dim(), "spec": ""}})
        if template is None:
            total = sum(s.n for s in bundle.segments)
            sample = bb.train_sample(bundle.segments, self._train_size(total),
                                     self.random_state)
            template = self._new_index().train(sample, n_total=total)
            name = w.new_name("index", ".bin")
            template.save(root / name)
        else:
            name = manifest["index"]["template"]
        transform = None
        if self.dba:
            transform = lambda X: bb.augment(bundle.segments, bundle.rows, X,  # noqa: E731
                                             self.dba, self.metric)
        bb.build_shards(bundle.segments, template, transform=transform, only=only)
        record = {"kind": self._index_kind(), "spec": self.index_spec,
                  "dim": self._vector_dim(), "template": name, "config": template.config()}
        if bb.shards_are_vectors(template, transform is not None):
            record["shards"] = "vectors"
        return record

    def _train_size(self, total: int) -> int:
        """Rows asked of :func:`bb.train_sample` to train the index for ``total`` vectors."""
        return bb.TRAIN_SAMPLE if self._trains(total) else 256

    def _trains(self, total: int) -> bool:
        """Whether the index needs a real training sample (Flat and HNSW, also when ``auto``
        picks them, only read the dimension: drawing 256 MB of rows would be wasted)."""
        if self.items or self.sparse:  # inverted files: nothing to learn
            return False
        from .index import needs_training

        try:
            return needs_training(self.index_spec, max(1, total), self._vector_dim(),
                                  self.max_memory)
        except ValueError:  # an invalid spec or budget: training says it, with the sample
            return True

    def _manifest_base(self, root: Path, emb_dir: str, wh_dir: str | None,
                       cat_name: str) -> dict[str, Any]:
        import cv2
        import faiss

        return {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"cvretrieval": __version__, "numpy": np.__version__,
                         "faiss": getattr(faiss, "__version__", "?"), "opencv": cv2.__version__},
            "embedder": {**self.embedder.spec(), "dim": int(self.embedder.dim), "dir": emb_dir,
                         "checksums": folder_checksums(root / emb_dir)},
            "metric": self.metric, "max_side": self.max_side, "random_state": self.random_state,
            "options": {**self._options(), "whitening": wh_dir}, "catalog": cat_name,
        }

    def _commit(self, w: BundleWriter, manifest: dict[str, Any], *, new_from: int | None = None,
                was: Sequence[str] | None = None) -> None:
        """Write the manifest with its counts. Told what changed since the committed
        manifest (rows from id ``new_from`` on, or the previous statuses of the rows now
        marked removed, ``was``), the counts are the committed ones updated: an add of n images
        reads n catalog rows, not the whole catalog. Otherwise (a build, a compact, a
        manifest without counts) the catalog is counted."""
        n_vectors = sum(s["n"] for s in manifest["segments"])
        prev = (w.manifest or {}).get("counts") or {}
        update = (new_from is not None or was is not None) and all(
            isinstance(prev.get(s), int) for s in STATUSES) and (
            new_from is None or prev.get("images") == new_from)
        with bb.Catalog(w.root / manifest["catalog"], manifest["next_id"]) as cat:
            if not update:
                counts = cat.counts()
            else:
                counts = {s: int(prev[s]) for s in STATUSES}
                if new_from is not None:
                    for s, n in cat.counts(first=new_from).items():
                        counts[s] += n
                for s in was or ():
                    counts[s] -= 1
                    counts["removed"] += 1
        manifest["counts"] = {"images": manifest["next_id"], "vectors": n_vectors, **counts}
        w.commit(manifest)

    def add(self, images: str | os.PathLike | Sequence[str | os.PathLike], *,
            progress: bool | None = None) -> Any:
        """Embed more images with the fitted embedder and append them to the bundle in
        place: new segments, new catalog rows, one manifest commit. Paths already in the
        catalog are skipped (and counted)."""
        root = self._require_root("add images")
        t0 = time.perf_counter()
        candidates = self._as_paths(images)
        with BundleWriter(root, timeout=self.lock_timeout, create=False) as w:
            manifest = self._writer_manifest(w)
            first_id = int(manifest["next_id"])
            keys = resolve_paths(candidates)
            with bb.Catalog(root / manifest["catalog"], first_id) as cat:
                known = cat.ids_of(keys)
                removed = {e.id for e in cat.entries(sorted(set(known.values())))
                           if e is not None and e.status == "removed"}
            live = {p for p, i in known.items() if i not in removed}
            paths = []
            for p, key in zip(candidates, keys, strict=True):
                if key not in live:
                    live.add(key)
                    paths.append(p)
            duplicates = len(candidates) - len(paths)
            failures: list[dict[str, str]] = []
            if paths:
                tasks = [(i, str(p), None) for i, p in enumerate(paths)]
                records, failures = self._stream(w, root / manifest["catalog"], tasks, paths,
                                                 first_id, {}, progress)
                manifest["segments"] = manifest["segments"] + records
                manifest["next_id"] = first_id + len(paths)
                new = {r["number"] for r in records if r["n"]}
                template = self._load_template(root, manifest)
                manifest["index"] = self._train_and_shard(root, manifest, w, template, new)
                self._commit(w, manifest, new_from=first_id)
        self._reopen(root, added=True)
        self._report("add", len(paths), failures, t0, 0.0, 0.0, duplicates=duplicates)
        return self

    def remove(self, images: Sequence[str | os.PathLike] | None = None, *,
               missing: bool = False) -> dict[str, Any]:
        """Remove images (by path) from the bundle, or with ``missing`` those whose files
        are gone. Removed images are never returned by a search. Returns a summary."""
        root = self._require_root("remove images")
        with BundleWriter(root, timeout=self.lock_timeout, create=False) as w:
            manifest = self._writer_manifest(w)
            with bb.Catalog(root / manifest["catalog"], manifest["next_id"], write=True) as cat:
                wanted = [str(Path(p).resolve()) for p in (images or [])]
                found = cat.ids_of(wanted) if wanted else {}
                ids = [i for p, i in found.items()]
                if missing:
                    ids += [e.id for e in cat.iter_entries()
                            if e.status != "removed" and not Path(e.path).is_file()]
                entries = [e for e in cat.entries(sorted(set(ids)))
                           if e is not None and e.status != "removed"]
                live = [e.id for e in entries]
                cat.mark_removed(live)
            not_found = [p for p in wanted if p not in found]
            self._commit(w, manifest, was=[e.status for e in entries])
        loaded = self._index
        self._open(root)
        if loaded is not None and live:  # keep the loaded index: take the removed out
            loaded.remove_ids(np.asarray(live, np.int64))
            self._index = loaded
        self.last_run_ = {"operation": "remove", "removed": len(live), "not_found": not_found,
                          "total_indexed": len(self)}
        return self.last_run_

    def compact(self, *, retrain: bool = False, progress: bool | None = None) -> dict[str, Any]:
        """Merge every segment into one without the removed images; with ``retrain`` (or
        when the index's list count no longer fits) train the index again."""
        root = self._require_root("compact")
        t0 = time.perf_counter()
        with BundleWriter(root, timeout=self.lock_timeout, create=False) as w:
            manifest = self._writer_manifest(w)
            bundle = Bundle(root, manifest)
            removed = bundle.catalog.ids_with_status("removed")
            before = len(bundle.segments)
            number, writer = w.new_segment(sparse=self.sparse, dim=self._vector_dim(),
                                           items=item_codec() if self.items else None)
            stores = bundle.feature_store() if self.store_features else None
            kp = self._store_writer()(writer.directory / "features") if stores else None
            for _, ids, rows in bb.iter_live_blocks(bundle.segments, removed):
                writer.append(ids, rows if self.sparse or self.items
                              else np.asarray(rows, np.float32))
                if kp is not None:
                    self._copy_keypoints(stores, kp, ids, bundle.catalog)
            writer.close()
            if kp is not None:
                kp.close()
            bundle.catalog.close()
            manifest["segments"] = [{"number": number, "n": writer.n,
                                     "first_id": max(writer.first_id, 0),
                                     "last_id": writer.last_id}]
            template = self._load_template(root, manifest)
            if not retrain and hasattr(template, "needs_retrain"):
                # against the nlist a retrain could train: capped by its sample
                n_train = bb.train_rows(self._train_size(writer.n), self._vector_dim())
                retrain = bool(template.needs_retrain(writer.n, n_train))
            manifest["index"] = self._train_and_shard(root, manifest, w,
                                                      None if retrain else template)
            self._commit(w, manifest)
        self._open(root)
        self.last_run_ = {"operation": "compact", "segments_before": before, "segments_after": 1,
                          "removed_dropped": int(len(removed)), "retrained": retrain,
                          "total_indexed": len(self), "seconds": round(time.perf_counter() - t0, 3)}
        return self.last_run_

    def _copy_keypoints(self, stores: Any, kp: Any, ids: NDArray[np.int64], catalog: Any) -> None:
        from .features.local import LocalFeatures

        for cid in ids.tolist():
            points, desc, words = stores.get(cid)
            n = len(points)
            desc = desc if desc is not None else np.zeros((n, 0), np.uint8)
            kp.append(LocalFeatures(np.asarray(points, np.float32), desc, np.ones(n, np.float32),
                                    np.zeros(n, np.float32), (0, 0)), words=words)

    def _reopen(self, root: Path, *, added: bool) -> None:
        """Read the committed manifest again; an index already in memory gets the new
        segments' shards merged in instead of being read again."""
        loaded, before = self._index, {s.number for s in self.bundle_.segments}  # type: ignore[union-attr]
        self._open(root)
        if loaded is not None and added:
            assert self.bundle_ is not None
            new = [s for s in self.bundle_.segments if s.number not in before]
            self._index = self._load_index(self.bundle_, new, loaded)

    def _require_root(self, what: str) -> Path:
        if self.bundle_ is None:
            raise NotFittedError(f"this retriever has no bundle yet: build it before you {what}")
        return self.bundle_.root

    def _writer_manifest(self, w: BundleWriter) -> dict[str, Any]:
        """The committed manifest, checked to still be the bundle this retriever loaded."""
        assert w.manifest is not None and self.bundle_ is not None
        if w.manifest["embedder"]["dir"] != self.bundle_.manifest["embedder"]["dir"]:
            raise BundleError(f"{w.root} was rebuilt by another process since it was opened: "
                              "load it again")
        return dict(w.manifest)

    def _load_template(self, root: Path, manifest: dict[str, Any]) -> Any:
        return self._index_class().load(root / manifest["index"]["template"])

    def _report(self, what: str, n: int, failed: list[dict[str, str]], t0: float,
                fit_s: float, index_s: float, duplicates: int = 0) -> None:
        unlisted = getattr(self, "_unlisted", [])
        n, failed = n + len(unlisted), [*failed, *unlisted]
        self.last_run_ = {
            "operation": what, "images": n, "indexed": n - len(failed), "skipped": len(failed),
            "duplicates": duplicates, "failed": failed[:1000], "total_indexed": len(self),
            "seconds": round(time.perf_counter() - t0, 3), "fit_seconds": round(fit_s, 3),
            "index_seconds": round(index_s, 3),
        }
        if failed:
            logger.warning("%s: %d of %d images could not be read and were skipped",
                           what, len(failed), n)

    def save(self, path: str | os.PathLike) -> Path:
        """Copy this retriever's bundle to ``path`` (a no-op when it is already there)."""
        root = self._require_root("save it")
        target = Path(path)
        if target.resolve() == root.resolve():
            return target
        src = self.bundle_.manifest  # type: ignore[union-attr]
        with BundleWriter(target, timeout=self.lock_timeout) as w:
            m = json.loads(json.dumps(src))
            m["embedder"]["dir"] = w.new_name("embedder")
            shutil.copytree(root / src["embedder"]["dir"], target / m["embedder"]["dir"])
            m["index"]["template"] = w.new_name("index", ".bin")
            shutil.copy2(root / src["index"]["template"], target / m["index"]["template"])
            if src["options"].get("whitening"):
                m["options"]["whitening"] = w.new_name("whitening")
                shutil.copytree(root / src["options"]["whitening"],
                                target / m["options"]["whitening"])
            m["catalog"] = w.new_name("catalog", ".sqlite")
            self.catalog.copy_to(target / m["catalog"])
            for seg in m["segments"]:
                old = root / segment_name(seg["number"])
                seg["number"] = w.new_segment_number()
                shutil.copytree(old, target / segment_name(seg["number"]))
            w.commit(m)
        return target


def _is_zero(v: Any) -> bool:
    if hasattr(v, "nnz"):
        return v.nnz == 0
    if type(v) is np.ndarray:  # the method: a third of np.any's cost, once per image
        return not v.any()
    return not np.any(np.asarray(v))
