"""The topic process: fits BERTopic stage by stage on a stored embedding matrix.

``import bertopic`` pulls in torch (~625 MB), so BERTopic lives here, in a spawned
process, and the kernel keeps only results: topic per document, the topic table, figures
as plotly JSON. UMAP and HDBSCAN run first in a short process of their own
(:func:`serve_clusters`: the stages ``load``, ``reduce``, ``cluster``, then ``("clustered",
labels)``), gone before this one imports BERTopic. Protocol over a Pipe: the parent sends
``("fit", settings)`` (with the ``labels``),
``("update", new_store, all_stores, seed)``, ``("merge", groups, all_stores)``,
``("rename", labels)``, ``("figure", kind, kwargs)``, ``("save", path)``, ``("load", path)``
or ``("stop",)``;
the worker answers ``("stage", name, start, end)`` while fitting, then ``("fitted",
topics, table)``, ``("figure", json)``, ``("saved",)``, or ``("error", text)``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import traceback
from typing import Any

from meno_jupyter.topics.store import DOCS_FILE

ONLINE_EPOCHS = 3  # random-batch passes over the store (6 scored the same, measured)
EXACT_NEIGHBOURS_MAX_DOCS = 60_000  # brute force grows as n²: ~26 s at 50k on 2 cores
NEEDS_MODEL = frozenset({"update", "merge", "rename", "figure", "save"})


def _listed(value: Any) -> list[Any]:
    """Return a list cell of BERTopic's table as a list (online fits leave NaN)."""
    return list(value) if isinstance(value, list | tuple) else []


def _table(model: Any, topics: list[int] | None = None) -> list[dict[str, Any]]:
    from collections import Counter

    sizes = Counter(topics) if topics is not None else None
    info = model.get_topic_info()
    rows = []
    for record in info.to_dict("records"):
        topic = int(record["Topic"])
        rows.append({
            "topic": topic,
            "size": int(record["Count"]) if sizes is None else sizes.get(topic, 0),
            "name": str(record.get("CustomName") or record["Name"]),
            "words": [str(w) for w in _listed(record.get("Representation"))][:10],
            "representative_docs": [str(d) for d in _listed(record.get("Representative_Docs"))],
        })
    return rows


def _topic_ids(model: Any) -> list[int]:
    return [int(t) for t in model.topics_]


def _send_fitted(conn: Any, model: Any, topics: list[int] | None = None) -> None:
    """Send every document's topic and the table (sizes counted from ``topics`` if given)."""
    conn.send(("fitted", _topic_ids(model) if topics is None else topics,
               _table(model, topics)))


def _stage_reporter(conn: Any) -> Any:
    from meno_jupyter.core.cleanup import trim_allocator

    def stage(name: str, start: float) -> None:
        gc.collect()
        trim_allocator()
        conn.send(("stage", name, start, time.time()))

    return stage


def _texts(store_path: str) -> Any:
    """Return the texts kept beside a store, as a streamed document source."""
    from meno_jupyter.topics.documents import Documents

    return Documents(os.path.join(store_path, DOCS_FILE), text_column="text")


class TrainedClusters:
    """A trained MiniBatchKMeans that BERTopic's ``partial_fit`` only assigns with.

    The centroids are learnt from random batches of the whole store (see
    :func:`train_clusters`); BERTopic's partial_fit, which walks the store chunk by chunk
    in corpus order, then only feeds the online c-TF-IDF.
    """

    def __init__(self, kmeans: Any) -> None:
        self.kmeans = kmeans
        self.labels_: Any = None

    def partial_fit(self, rows: Any) -> TrainedClusters:
        """Assign ``rows`` (``labels_``) without moving the centroids."""
        self.labels_ = self.kmeans.predict(rows)
        return self

    def fit(self, rows: Any, y: Any = None) -> TrainedClusters:
        """Assign ``rows``, as :meth:`partial_fit` does."""
        return self.partial_fit(rows)

    def predict(self, rows: Any) -> Any:
        """Return the nearest centroid of each row."""
        return self.kmeans.predict(rows)


def train_clusters(kmeans: Any, store_paths: list[str], seed: int | None,
                   epochs: int = ONLINE_EPOCHS) -> None:
    """Train ``kmeans`` on random batches of the stores' rows, ``epochs`` passes.

    Corpora often come sorted (by source, name, date): chunks in corpus order are far
    from a random sample, and MiniBatchKMeans fed them drifts with the order (NMI 0.30
    against 0.35 with random batches on 50k Debian descriptions sorted by package name).
    One batch of rows is in memory at a time.
    """
    import numpy as np

    from meno_jupyter.topics.store import EmbeddingStore

    random = np.random.default_rng(seed)
    for _ in range(epochs):
        for path in store_paths:
            store = EmbeddingStore.open(path)
            order = random.permutation(store.meta.n_docs)
            batch = max(store.meta.chunk_size, kmeans.n_clusters)
            for start in range(0, len(order), batch):
                rows = store.as_float32(np.sort(order[start:start + batch]))
                kmeans.partial_fit(rows.astype("float64"))  # BERTopic's dtype (its #2097)


def _fit_online(conn: Any, store_path: str, settings: dict[str, Any]) -> Any:
    """MiniBatchKMeans on the embeddings themselves, then an online c-TF-IDF, chunk by chunk.

    BERTopic's online recipe reduces to 5 dimensions with IncrementalPCA first, which
    cost most of the topic quality in our measurements; clustering the embeddings
    directly, on random batches, kept it. Memory holds one batch of rows at a time.
    """
    from meno_jupyter.topics.store import EmbeddingStore

    stage = _stage_reporter(conn)
    start = time.time()
    from bertopic import BERTopic
    from bertopic.dimensionality import BaseDimensionalityReduction
    from bertopic.vectorizers import OnlineCountVectorizer
    from sklearn.cluster import MiniBatchKMeans

    store = EmbeddingStore.open(store_path)
    n_docs, chunk = store.meta.n_docs, store.meta.chunk_size
    n_topics = settings["n_topics"] or min(50, max(5, n_docs // 200))
    if n_topics > min(chunk, n_docs):
        raise ValueError(f"online mode needs chunks of at least n_topics={n_topics} "
                         f"documents (chunk_size is {chunk}, the corpus {n_docs})")
    kmeans = MiniBatchKMeans(n_clusters=n_topics, random_state=settings["seed"], n_init=3,
                             batch_size=max(1024, chunk))
    stage("load", start)

    start = time.time()
    train_clusters(kmeans, [store_path], settings["seed"])
    stage("cluster", start)

    start = time.time()
    model = BERTopic(embedding_model=None, umap_model=BaseDimensionalityReduction(),
                     hdbscan_model=TrainedClusters(kmeans),
                     vectorizer_model=OnlineCountVectorizer(), calculate_probabilities=False,
                     verbose=False)
    for texts, rows in _store_chunks(store_path):
        model.partial_fit(texts, embeddings=rows)
    stage("partial_fit", start)
    start = time.time()
    topics = _assign(model, [store_path])
    stage("assign", start)
    _send_fitted(conn, model, topics)
    return model


def _store_chunks(store_path: str) -> Any:
    """Yield (texts, float64 rows) chunk by chunk from a store and its texts."""
    from meno_jupyter.topics.store import EmbeddingStore

    store = EmbeddingStore.open(store_path)
    offset = 0
    for texts in _texts(store_path).batches(store.meta.chunk_size):
        rows = store.as_float32(slice(offset, offset + len(texts)))
        offset += len(texts)
        # float64: BERTopic's partial_fit fails on float32 (its issue #2097)
        yield texts, rows.astype("float64")


def _assign(model: Any, store_paths: list[str]) -> list[int]:
    """Give every document of the stores its topic under the current model."""
    topics: list[int] = []
    for path in store_paths:
        for texts, rows in _store_chunks(path):
            assigned, _ = model.transform(texts, embeddings=rows)
            topics.extend(int(t) for t in assigned)
    model.topics_ = topics
    return topics


def _update(conn: Any, model: Any, new_store: str, all_stores: list[str],
            seed: int | None) -> None:
    """Online: learn from the new documents, then reassign every document."""
    stage = _stage_reporter(conn)
    clusters = model.hdbscan_model
    if isinstance(clusters, TrainedClusters):  # sessions saved before it learnt by batches
        start = time.time()
        train_clusters(clusters.kmeans, [new_store], seed)
        stage("cluster", start)
    start = time.time()
    for texts, rows in _store_chunks(new_store):
        model.partial_fit(texts, embeddings=rows)
    stage("partial_fit", start)
    start = time.time()
    topics = _assign(model, all_stores)
    stage("assign", start)
    _send_fitted(conn, model, topics)


# Rows per block of the neighbour search: a block of similarities is 16 MiB of float32.
NEIGHBOUR_BLOCK_ROWS = 2048
# Columns of a block whose k-th best starts each row's search within its own block.
SAMPLED_COLUMNS = 256


def exact_cosine_neighbours(embeddings: Any, k: int, *,
                            block: int = NEIGHBOUR_BLOCK_ROWS) -> tuple[Any, Any]:
    """Return the exact ``k`` nearest neighbours (indices, cosine distances) of every row.

    Brute force over blocks of similarities (float32 matrix products), each pair of row
    blocks computed once and read both ways: half the products of a full search. Each
    block's rows start from their ``k`` best within it; afterwards only similarities above
    a row's current ``k``-th best are merged into its list. Each row comes first in its own
    list, at distance 0 (as pynndescent gives it; scikit-learn's brute force gave rounding
    noise, which UMAP took for the nearest other row). At 50k documents: 11.4 s against
    scikit-learn's brute force 27.3 s, 75 MiB less, the same lists but for ties.
    """
    import numpy as np

    unit = np.asarray(embeddings, dtype=np.float32)
    # The norms without a squared copy of the rows (np.linalg.norm makes one).
    norms = np.sqrt(np.einsum("ij,ij->i", unit, unit))
    unit = unit / np.maximum(norms, 1e-12)[:, None]
    size = len(unit)
    k = min(k, size)
    # A block smaller than k (the last one) leaves its lists short until the others come.
    best = np.full((size, k), -np.inf, dtype=np.float32)
    found = np.zeros((size, k), dtype=np.int32)
    starts = range(0, size, block)
    for first in starts:
        rows = unit[first:first + block]
        similarity = rows @ rows.T
        np.fill_diagonal(similarity, np.inf)  # each row first, even before a duplicate
        sampled = len(rows) > SAMPLED_COLUMNS > k
        # A few rows at a time: in a dense cluster a row has many similarities to merge.
        for part in range(0, len(rows), SAMPLED_COLUMNS):
            rows_part = similarity[part:part + SAMPLED_COLUMNS]
            # The k-th best of the first columns is at most the row's k-th best of all:
            # every similarity from there on is merged, k or more per row (a small block:
            # all of them).
            floor = (np.partition(rows_part[:, :SAMPLED_COLUMNS], SAMPLED_COLUMNS - k,
                                  axis=1)[:, SAMPLED_COLUMNS - k] if sampled
                     else np.full(len(rows_part), -np.inf, dtype=np.float32))
            _merge_above(best, found, rows_part, first + part, first, by_row=True,
                         threshold=np.nextafter(floor, -np.inf)[:, None])
    for first in starts:
        rows = unit[first:first + block]
        for other in range(first + block, size, block):
            similarity = rows @ unit[other:other + block].T
            _merge_above(best, found, similarity, first, other, by_row=True)
            _merge_above(best, found, similarity, other, first, by_row=False)
    distances = np.maximum(1.0 - best, 0.0)
    return found, distances


def _merge_above(best: Any, found: Any, similarity: Any, row0: int, col0: int, *,
                 by_row: bool, threshold: Any = None) -> None:
    """Merge the similarities above each list's ``k``-th best into the lists (kept sorted).

    ``similarity[i, j]`` is between row ``row0 + i`` and ``col0 + j`` when ``by_row``,
    else between row ``row0 + j`` and ``col0 + i`` (the block read the other way).
    ``threshold``: a lower one than the lists' own (a column per row of the block).
    """
    import numpy as np

    k = best.shape[1]
    height, width = similarity.shape
    if threshold is None and by_row:
        threshold = best[row0:row0 + height, -1:]
    elif threshold is None:
        threshold = best[row0:row0 + width, -1][None, :]
    flat = np.flatnonzero(similarity > threshold)
    if len(flat) == 0:
        return
    values = similarity.ravel()[flat]
    first_index, second_index = np.divmod(flat, width)
    where_row, where_col = ((first_index, second_index) if by_row
                            else (second_index, first_index))
    touched = np.unique(where_row)
    # The lists of the rows touched and the new candidates: the best k of both, per row.
    all_rows = np.concatenate([np.repeat(touched, k), where_row])
    all_values = np.concatenate([best[row0 + touched].ravel(), values])
    all_found = np.concatenate([found[row0 + touched].ravel(),
                                (where_col + col0).astype(np.int32)])
    order = np.lexsort((-all_values, all_rows))
    all_rows, all_values, all_found = all_rows[order], all_values[order], all_found[order]
    group_start = np.searchsorted(all_rows, touched)
    group_size = np.diff(np.append(group_start, len(all_rows)))
    rank = np.arange(len(all_rows)) - np.repeat(group_start, group_size)
    kept = rank < k
    target = row0 + all_rows[kept]
    best[target, rank[kept]] = all_values[kept]
    found[target, rank[kept]] = all_found[kept]


def reduce_given_neighbours(rows: Any, *, n_neighbors: int, n_components: int,
                            seed: int | None) -> Any:
    """Reduce ``rows`` as ``UMAP(metric="cosine", min_dist=0)`` does, on exact neighbours.

    UMAP's own steps (its fuzzy graph, then its layout), called without the class: given
    the neighbours, the class still copies the rows twice (``X[index]``), and it starts
    the layout with ARPACK holding ``sqrt(n)`` Lanczos vectors. Here the rows are not
    copied and a connected graph's start comes from :func:`spectral_start` (a graph in
    pieces from :func:`pieces_start`, which uses it for each piece): the clustering
    process at 50k documents peaked at 491 MiB instead of 661, with the same agreement to
    the labels (NMI 0.33). Fits repeat for a fixed ``seed`` (the layout then runs on one
    core, as UMAP's does).
    """
    import numpy as np
    from scipy.sparse.csgraph import connected_components
    from scipy.sparse.linalg import ArpackError

    _umap_class(nndescent=False)  # UMAP's modules, with stand-ins for pynndescent
    from sklearn.utils import check_random_state
    from umap.distances import named_distances
    from umap.umap_ import (
        find_ab_params,
        fuzzy_simplicial_set,
        noisy_scale_coords,
        simplicial_set_embedding,
    )

    n_neighbors = min(n_neighbors, len(rows))
    indices, distances = exact_cosine_neighbours(rows, n_neighbors)
    random = check_random_state(seed)
    graph = fuzzy_simplicial_set(rows, n_neighbors, random, "cosine", {}, indices, distances,
                                 False, 1.0, 1.0, True)[0]
    del indices, distances
    # UMAP's defaults, named here because its layout drops the edges under max / epochs
    # before the spectral start, which must see the same graph.
    epochs = 500 if len(rows) <= 10_000 else 200
    graph = graph.tocoo()
    graph.sum_duplicates()
    graph.data[graph.data < graph.data.max() / epochs] = 0.0
    graph.eliminate_zeros()
    # UMAP's own start where ours cannot run (too few rows for a spectrum, or ARPACK
    # failing: it falls back to a random one), and a random one for fewer still.
    enough_rows = len(rows) > n_components + 1
    start: Any = "spectral" if enough_rows else "random"
    pieces, labels = connected_components(graph)
    ours = None
    if pieces == 1 and spectrum_fits(len(rows), n_components):
        with contextlib.suppress(ArpackError):
            ours = spectral_start(graph, n_components)
    elif pieces > 1 and enough_rows:
        ours = pieces_start(rows, graph, pieces, labels, dim=n_components, random=random)
    if ours is not None:
        start = noisy_scale_coords(ours, random, max_coord=10, noise=0.0001)
    a, b = find_ab_params(1.0, 0.0)
    reduced, _ = simplicial_set_embedding(
        rows, graph, n_components, 1.0, a, b, 1.0, 5, epochs, start, random,
        named_distances["cosine"], {}, False, {}, False, parallel=seed is None,
        tqdm_kwds={"disable": True})
    reduced[np.asarray(graph.sum(axis=1)).ravel() == 0] = np.nan  # as UMAP: no edges, no place
    return reduced


def pieces_start(rows: Any, graph: Any, pieces: int, labels: Any, *, dim: int,
                 random: Any) -> Any:
    """Return UMAP's start for a graph in ``pieces``, each piece's own with :func:`spectral_start`.

    As UMAP's ``multi_component_layout``: the pieces placed by a spectral layout of their
    centroids (or on the axes when there are few), each spread by its own spectral start
    (a random one when too small, or when ARPACK fails) within half the distance to the
    nearest other piece. Without its copies of the rows and its ``sqrt(n)`` Lanczos vectors:
    at 50k documents in 2 pieces, 225 MiB traced for UMAP's own start.
    """
    import numpy as np
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import ArpackError
    from sklearn.metrics import pairwise_distances
    from umap.spectral import component_layout

    size = len(rows)
    if pieces > 2 * dim:
        member = csr_matrix((np.ones(size), (labels, np.arange(size))), shape=(pieces, size))
        centroids = (member @ rows) / np.bincount(labels, minlength=pieces)[:, None]
        places = component_layout(centroids, pieces, np.arange(pieces), dim, random,
                                  metric="cosine")
    else:
        half = int(np.ceil(pieces / 2.0))
        base = np.hstack([np.eye(half), np.zeros((half, dim - half))])
        places = np.vstack([base, -base])[:pieces]
    start = np.empty((size, dim), dtype=np.float32)
    graph = graph.tocsr()
    for label in range(pieces):
        inside = np.flatnonzero(labels == label)
        distances = pairwise_distances(places[label:label + 1], places)
        reach = distances[distances > 0.0].min() / 2.0
        spread = None
        if spectrum_fits(len(inside), dim):
            with contextlib.suppress(ArpackError):
                spread = spectral_start(graph[inside][:, inside].tocoo(), dim)
                spread *= reach / np.max(np.abs(spread))
        if spread is None:
            spread = random.uniform(low=-reach, high=reach, size=(len(inside), dim))
        start[inside] = spread + places[label]
    return start


def spectrum_fits(size: int, dim: int) -> bool:
    """Tell whether :func:`spectral_start` can run on ``size`` points (ARPACK's vectors fit)."""
    return size > 2 * dim + 3


def spectral_start(graph: Any, dim: int) -> Any:
    """Return the ``dim`` smallest non-trivial eigenvectors of ``graph``'s normalised Laplacian.

    UMAP's spectral initialisation, with ARPACK given 32 Lanczos vectors instead of
    ``sqrt(n)`` (223 at 50k documents, where the search peaked at 174 MiB, 28 with 32): the
    same eigenvalues and eigenvectors to ARPACK's tolerance, in a quarter of the time. ARPACK's
    signs are arbitrary; each vector is turned so that its largest entry is positive.
    """
    import numpy as np
    from scipy.sparse import identity, spdiags
    from scipy.sparse.linalg import eigsh

    size = graph.shape[0]
    root_degree = np.sqrt(np.asarray(graph.sum(axis=0)).ravel())
    scale = spdiags(1.0 / root_degree, 0, size, size)
    laplacian = identity(size, dtype=np.float64) - scale @ graph @ scale
    lanczos = min(size - 1, max(2 * dim + 3, 32))
    values, vectors = eigsh(laplacian, dim + 1, which="SM", ncv=lanczos, tol=1e-4,
                            v0=np.ones(size), maxiter=size * 5)
    vectors = vectors[:, np.argsort(values)[1:dim + 1]]
    largest = vectors[np.abs(vectors).argmax(axis=0), np.arange(dim)]
    return vectors * np.sign(largest)


def _clusters(conn: Any, store_path: str, settings: dict[str, Any]) -> list[int]:
    """Load the embeddings, reduce them with UMAP, cluster with HDBSCAN; return the labels."""
    import numpy as np

    from meno_jupyter.topics.store import EmbeddingStore

    stage = _stage_reporter(conn)
    start = time.time()
    embeddings = EmbeddingStore.open(store_path).as_float32()  # UMAP's dtype anyway
    stage("load", start)

    start = time.time()
    n_neighbors, n_components = settings["n_neighbors"], settings["n_components"]
    if len(embeddings) <= EXACT_NEIGHBOURS_MAX_DOCS:
        reduced = reduce_given_neighbours(embeddings, n_neighbors=n_neighbors,
                                          n_components=n_components, seed=settings["seed"])
    else:
        reduced = _umap_class(nndescent=True)(
            n_neighbors=n_neighbors, n_components=n_components, min_dist=0.0, metric="cosine",
            random_state=settings["seed"]).fit_transform(embeddings)
    del embeddings
    stage("reduce", start)

    start = time.time()
    from hdbscan import HDBSCAN

    # HDBSCAN's default core_dist_n_jobs=4 starts workers that doubled memory (measured).
    clusterer = HDBSCAN(min_cluster_size=settings["min_topic_size"], metric="euclidean",
                        cluster_selection_method="eom", prediction_data=True,
                        core_dist_n_jobs=settings["core_dist_n_jobs"])
    labels = [int(label) for label in np.asarray(clusterer.fit_predict(reduced))]
    del clusterer, reduced
    stage("cluster", start)
    return labels


class NNDescentNotLoadedError(RuntimeError):
    """UMAP asked for its neighbour search where the clustering process gave the neighbours."""


class _NNDescentStandIn:
    """Stands in for ``pynndescent.NNDescent`` while UMAP is given the neighbours."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NNDescentNotLoadedError("pynndescent was not loaded: the neighbours were given")


def _umap_class(*, nndescent: bool) -> Any:
    """Import and return ``umap.UMAP``; without pynndescent unless ``nndescent``.

    UMAP imports pynndescent whole (its numba functions: ~35 MiB of this process) though,
    given the neighbours, it only names ``NNDescent`` and two tables of distances it looks
    in for metrics of pynndescent's own ("cosine" is UMAP's). Stand-ins take their place;
    where UMAP fails to import with them, the real package is imported instead.
    """
    import sys

    loaded = [name for name in sys.modules if name.partition(".")[0] in REIMPORTABLE]
    on_stand_ins = getattr(sys.modules.get("pynndescent"), "NNDescent",
                           None) is _NNDescentStandIn
    if nndescent and on_stand_ins:  # import UMAP again, for real
        for name in loaded:
            del sys.modules[name]
    elif not nndescent and not loaded:
        _put_stand_ins()
        try:
            from umap import UMAP
        except (ImportError, AttributeError):
            return _umap_class(nndescent=True)
        return UMAP
    from umap import UMAP

    return UMAP


def _put_stand_ins() -> None:
    """Put the stand-ins for pynndescent's modules where ``import`` finds them."""
    import sys
    from types import ModuleType

    package, distances, sparse = (ModuleType(name) for name in NNDESCENT_MODULES)
    package.NNDescent = _NNDescentStandIn  # type: ignore[attr-defined]
    package.distances, distances.named_distances = distances, {}  # type: ignore[attr-defined]
    package.sparse, sparse.sparse_named_distances = sparse, {}  # type: ignore[attr-defined]
    sys.modules.update(zip(NNDESCENT_MODULES, (package, distances, sparse), strict=True))


NNDESCENT_MODULES = ("pynndescent", "pynndescent.distances", "pynndescent.sparse")


def serve_clusters(conn: Any, store_path: str, settings: dict[str, Any]) -> None:
    """Send the stages and ``("clustered", labels)`` from a short clustering process.

    UMAP, numba and HDBSCAN hold ~400 MiB once imported and used, for as long as the
    process lives: they live in this short process, which is gone before the topic
    process imports BERTopic to represent the topics.
    """
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module="umap")  # n_jobs vs seed
    try:
        conn.send(("clustered", _clusters(conn, store_path, settings)))
    except Exception:
        conn.send(("error", traceback.format_exc()))


class _ReducedAlready:
    """BERTopic's reduction step where the clustering process has reduced and clustered.

    BERTopic's ``BaseCluster`` takes the labels and never reads the reduced rows, but
    BERTopic copies whatever the reduction returns (``np.nan_to_num``), and
    ``BaseDimensionalityReduction`` returns the rows themselves: a second copy of every
    row held to the end of the fit (73 MiB at 50k documents). One column of zeros is
    returned instead.
    """

    def fit(self, rows: Any, y: Any = None) -> _ReducedAlready:
        return self

    def transform(self, rows: Any) -> Any:
        import numpy as np

        return np.zeros((len(rows), 1), dtype=np.float32)


def _fit(conn: Any, store_path: str, settings: dict[str, Any]) -> Any:
    """Represent the topics of the clustering's ``labels`` (in ``settings``) with BERTopic."""
    if settings.get("mode") == "online":
        return _fit_online(conn, store_path, settings)
    import numpy as np

    from meno_jupyter.topics.store import EmbeddingStore

    labels = settings["labels"]  # found by the clustering process (serve_clusters)
    stage = _stage_reporter(conn)
    start = time.time()
    embeddings = EmbeddingStore.open(store_path).as_float32()
    docs = list(_texts(store_path))
    from bertopic import BERTopic
    from bertopic.cluster import BaseCluster
    from bertopic.dimensionality import BaseDimensionalityReduction

    model = BERTopic(embedding_model=None, umap_model=_ReducedAlready(),
                     hdbscan_model=BaseCluster(), min_topic_size=settings["min_topic_size"],
                     calculate_probabilities=False, verbose=False)
    model.fit(docs, embeddings=embeddings, y=np.asarray(labels))
    model.umap_model = BaseDimensionalityReduction()  # what a saved model holds, as before
    stage("represent", start)
    _send_fitted(conn, model)
    return model


def _merge(conn: Any, model: Any, groups: list[list[int]], stores: list[str]) -> None:
    """Merge each group of topics into one; c-TF-IDF is computed again over every text."""
    docs = [text for path in stores for text in _texts(path)]
    model.merge_topics(docs, groups)
    del docs
    _send_fitted(conn, model, _topic_ids(model))


def _rename(conn: Any, model: Any, labels: dict[int, str]) -> None:
    """Give topics custom labels (kept with earlier ones; the table shows them)."""
    model.set_topic_labels(labels)
    _send_fitted(conn, model, _topic_ids(model))


def _figure(model: Any, kind: str, kwargs: dict[str, Any]) -> str:
    draw = {"barchart": model.visualize_barchart, "topics": model.visualize_topics,
            "hierarchy": model.visualize_hierarchy, "heatmap": model.visualize_heatmap}
    if kind not in draw:
        raise ValueError(f"no figure {kind!r}: choose from {', '.join(draw)}")
    figure = draw[kind](**kwargs)
    return str(figure.to_json())


# What the topic process never needs (the embeddings are precomputed, the clustering is
# done by its own process), though BERTopic imports it when it can: ~120 MiB for UMAP,
# numba and pynndescent, ~300 MiB for torch. (HDBSCAN, ~1 MiB, BERTopic's transform needs
# importable: it checks models against hdbscan.HDBSCAN.)
UMAP_MODULES = frozenset({"umap", "numba", "pynndescent"})
HIDDEN = UMAP_MODULES | {"torch"}
# What the clustering process drops to import UMAP again without the stand-ins (numba's
# own modules stay: it cannot be imported twice in one process).
REIMPORTABLE = UMAP_MODULES - {"numba"}


class _Hidden:
    """A meta-path finder that makes packages look uninstalled to the topic process.

    BERTopic imports each of them only where it can (its text-generation and embedding
    backends and UMAP are optional), so the topic process stays smaller.
    """

    def __init__(self, names: frozenset[str]) -> None:
        self.names = set(names)

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden from the topic "
                                      "process: it does not need it)")


def _allow_umap(hidden: _Hidden) -> None:
    """Let UMAP be imported again: BERTopic's topic map draws with it."""
    if not hidden.names & UMAP_MODULES:
        return
    hidden.names -= UMAP_MODULES
    from bertopic.plotting import _topics
    from umap import UMAP

    _topics.UMAP, _topics.HAS_UMAP = UMAP, True  # it looked for UMAP once, when imported


def serve(conn: Any, store_path: str) -> None:
    """Answer requests until told to stop or the parent goes away."""
    import logging
    import sys
    import warnings

    hidden = _Hidden(HIDDEN)
    sys.meta_path.insert(0, hidden)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning, module="umap")  # n_jobs vs seed
    model: Any = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        try:
            kind = message[0]
            if kind == "stop":
                return
            if kind in NEEDS_MODEL and model is None:
                raise RuntimeError("fit or load a model first")
            if kind == "fit":
                model = _fit(conn, store_path, message[1])
            elif kind == "update":
                _update(conn, model, message[1], message[2], message[3])
            elif kind == "merge":
                _merge(conn, model, message[1], message[2])
            elif kind == "rename":
                _rename(conn, model, message[1])
            elif kind == "figure":
                if message[1] == "topics":
                    _allow_umap(hidden)
                conn.send(("figure", _figure(model, message[1], message[2])))
            elif kind == "save":
                logging.disable(logging.WARNING)  # BERTopic's notice about pickle versions
                try:
                    model.save(message[1], serialization="pickle", save_embedding_model=False)
                finally:
                    logging.disable(logging.NOTSET)
                conn.send(("saved",))
            elif kind == "load":
                from bertopic import BERTopic

                model = BERTopic.load(message[1])
                _send_fitted(conn, model)
        except Exception:
            conn.send(("error", traceback.format_exc()))
