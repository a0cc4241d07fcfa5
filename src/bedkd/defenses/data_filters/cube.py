"""CUBE: clustering-based training-data filter.

Cui, Yi, Chen, Sun, Liu and Lin, "A Unified Evaluation of Textual Backdoor Learning: Frameworks
and Benchmarks", NeurIPS 2022 Datasets and Benchmarks (arXiv:2206.08514).

Poisoned samples form their own cluster in the representation space of a model trained on the
poisoned set. CUBE embeds every training sample, reduces the dimension, clusters with HDBSCAN, and
within each label keeps only the largest cluster: the samples of that label in any other cluster
are removed.

Defaults, from OpenBackdoor's ``CUBEDefender`` and ``Trainer.dimension_reduction``
(thunlp/OpenBackdoor): PCA to 20 dimensions then UMAP to 2 (``n_neighbors=100``, ``min_dist=0``,
seeded); HDBSCAN with ``min_samples=100``, ``cluster_selection_epsilon=0`` and the hdbscan package's
``min_cluster_size=5``; HDBSCAN's noise (-1) counts as one more cluster; within a label, a cluster
other than the largest is removed only when it holds less than half of the label's rows
(``drop_below=0.5``).

Deviations: (1) OpenBackdoor trains a fresh encoder on the suspicious set for 10 epochs; here the
suspicious model itself is the encoder (it was trained on that set), so nothing is trained.
(2) The embedding is the last layer's [CLS] state (``representation="cls"``); OpenBackdoor feeds it
through the BERT pooler first (``representation="pooled"``). (3) UMAP (package ``umap-learn``) is not
a dependency of this project, so the default reducer is PCA alone, to ``pca_components`` (20)
dimensions; ``reducer="umap"`` gives the published PCA + UMAP pipeline when umap-learn is installed.
(4) HDBSCAN is scikit-learn's (``sklearn.cluster.HDBSCAN``), not the hdbscan package; ``min_samples``
is capped at the number of rows.

Per-row score: 1 - (size of the row's cluster within its label / rows of that label); rows of the
kept cluster score lowest.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import HDBSCAN
from sklearn.decomposition import PCA

from ...data import LabeledTexts, check_labels
from ...errors import BedkdError
from ...modeling import Classifier
from ...modeling.inference import MAX_LENGTH
from ...modeling.representations import representations
from ...options import Options, option
from ..base import DataFilter, Filtered
from .bki import Represent


@dataclass
class CUBEConfig(Options):
    """CUBE data-filter options (OpenBackdoor defaults)"""
    representation: str = option("cls", "sample embedding: last-layer [CLS] state, or the pooler's output "
                                 "(OpenBackdoor)", choices=("cls", "pooled"))
    reducer: str = option("pca", "dimension reduction: PCA alone, or PCA then UMAP (published; needs "
                          "umap-learn)", choices=("pca", "umap"))
    pca_components: int = option(20, "PCA dimensions", low=1)
    umap_components: int = option(2, "UMAP dimensions", low=1)
    umap_neighbors: int = option(100, "UMAP n_neighbors", low=2)
    umap_min_dist: float = option(0.0, "UMAP min_dist", low=0.0)
    min_cluster_size: int = option(5, "HDBSCAN min_cluster_size", low=2)
    min_samples: int = option(100, "HDBSCAN min_samples (capped at the number of rows)", low=1)
    cluster_selection_epsilon: float = option(0.0, "HDBSCAN cluster_selection_epsilon", low=0.0)
    drop_below: float = option(0.5, "remove a non-largest cluster of a label only when it holds less than "
                               "this share of the label's rows", above=0.0, high=1.0)
    batch_size: int = option(64, "inference batch size", low=1)
    max_length: int = option(MAX_LENGTH, "tokens kept per text", low=8)
    seed: int = option(0, "random seed (PCA and UMAP)", low=0)


@dataclass
class LabelClusters:
    """The clusters found among the rows of one label: sizes, the one kept, the ones removed."""
    label: int
    rows: int
    sizes: dict[int, int]
    kept: int
    removed: list[int]

    def to_dict(self) -> dict:
        return {"label": self.label, "rows": self.rows, "cluster_sizes": {str(k): v for k, v in self.sizes.items()},
                "kept_cluster": self.kept, "removed_clusters": self.removed}


def reduce_dimension(x: np.ndarray, cfg: CUBEConfig) -> np.ndarray:
    """PCA to ``pca_components`` (capped by the data's shape), then UMAP when asked."""
    k = min(cfg.pca_components, x.shape[0], x.shape[1])
    z = PCA(n_components=k, random_state=cfg.seed).fit_transform(x)
    if cfg.reducer == "pca":
        return z
    try:
        from umap import UMAP
    except ImportError:
        raise BedkdError("CUBE reducer 'umap' needs the umap-learn package (pip install umap-learn); "
                         "or use reducer 'pca'") from None
    return UMAP(n_neighbors=min(cfg.umap_neighbors, len(z) - 1), min_dist=cfg.umap_min_dist,
                n_components=cfg.umap_components, random_state=cfg.seed, transform_seed=cfg.seed).fit(z).embedding_


def cluster(z: np.ndarray, cfg: CUBEConfig) -> np.ndarray:
    """HDBSCAN cluster ids (-1: noise)."""
    model = HDBSCAN(min_cluster_size=cfg.min_cluster_size, min_samples=min(cfg.min_samples, len(z)),
                    cluster_selection_epsilon=cfg.cluster_selection_epsilon, copy=True)
    return model.fit_predict(z)


def split_by_label(labels: np.ndarray, clusters: np.ndarray, drop_below: float) -> list[LabelClusters]:
    """Per label: keep the largest cluster (ties: the lowest id), remove the others under ``drop_below``."""
    out = []
    for y in sorted(set(labels.tolist())):
        members = clusters[labels == y]
        sizes = dict(sorted(Counter(members.tolist()).items()))
        kept = max(sizes, key=lambda c: (sizes[c], -c))
        removed = [c for c in sizes if c != kept and sizes[c] < drop_below * len(members)]
        out.append(LabelClusters(int(y), int(len(members)), sizes, int(kept), removed))
    return out


class CUBE(DataFilter):
    """Data-filter role: drop the rows outside the largest cluster of their label."""
    name = "cube"

    def __init__(self, cfg: CUBEConfig | None = None, embed: Represent | None = None):
        self.cfg = cfg or CUBEConfig()
        self.embed = embed   # None: the model's own representation

    def embeddings(self, clf: Classifier, texts: list[str], progress: bool = False) -> np.ndarray:
        if self.embed is not None:
            return np.asarray(self.embed(clf, texts), dtype=np.float64)
        x = representations(clf, texts, pooling="pooler" if self.cfg.representation == "pooled" else "cls",
                            batch_size=self.cfg.batch_size, max_length=self.cfg.max_length,
                            desc="CUBE: embedding" if progress else None)
        return x.astype(np.float64)

    def filter(self, suspect_model: Classifier, suspect_data: LabeledTexts, clean: LabeledTexts | None = None,
               progress: bool = False) -> Filtered:
        cfg = self.cfg
        check_labels(suspect_data, suspect_model.num_labels)
        if len(suspect_data) < 2:
            raise BedkdError(f"{suspect_data.source}: CUBE needs at least 2 rows to cluster")
        t0 = time.perf_counter()
        x = self.embeddings(suspect_model, list(suspect_data.texts), progress)
        t1 = time.perf_counter()
        z = reduce_dimension(x, cfg)
        clusters = cluster(z, cfg)
        labels = np.asarray(suspect_data.labels)
        groups = split_by_label(labels, clusters, cfg.drop_below)
        removed_mask = np.zeros(len(labels), dtype=bool)
        scores = np.zeros(len(labels))
        for g in groups:
            in_label = labels == g.label
            removed_mask |= in_label & np.isin(clusters, g.removed)
            for c, size in g.sizes.items():
                scores[in_label & (clusters == c)] = 1.0 - size / g.rows
        removed = np.flatnonzero(removed_mask).tolist()
        report = {"method": self.name, "config": cfg.to_dict(), "rows": len(suspect_data),
                  "embedding_dim": int(x.shape[1]), "reduced_dim": int(z.shape[1]),
                  "min_samples_used": min(cfg.min_samples, len(z)),
                  "clusters": int(len(set(clusters.tolist()) - {-1})), "noise": int((clusters == -1).sum()),
                  "labels": [g.to_dict() for g in groups], "removed": len(removed),
                  "seconds": {"embed": t1 - t0, "cluster": time.perf_counter() - t1}}
        return Filtered(removed, scores.tolist(), report)
