"""TopicExplorer: BERTopic fitted in its own process on the stored embeddings."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import normalized_mutual_info_score

from meno_jupyter.topics import ChunkedEmbedder, TopicExplorer, TopicProcessError

Corpus = tuple[list[str], list[str]]
STAGES = ["embed", "load", "reduce", "cluster", "represent"]


@pytest.fixture(scope="module")
def explorer(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Any:
    texts, _ = corpus
    store = tmp_path_factory.mktemp("topics") / "store"
    fitted = TopicExplorer(texts, store, min_topic_size=5,
                           embedder=ChunkedEmbedder(precision="float16", progress=False))
    fitted.fit()
    yield fitted
    fitted.close()


def test_fit_shows_one_timeline_with_a_band_per_stage(explorer: Any) -> None:
    timeline = explorer.timeline
    assert [s.name for s in timeline.stages] == STAGES
    assert all(s.duration_s >= 0 for s in timeline.stages)
    assert len(timeline.times) >= 5
    # the topic process (BERTopic, torch) is a child: the tree peaks far above the kernel
    assert timeline.peak() > timeline.peak(tree=False) + 200 * 2**20
    spec = timeline.figure_spec()
    assert [a["text"] for a in spec["layout"]["annotations"]] == STAGES
    bundle = timeline._repr_mimebundle_()
    assert "application/vnd.plotly.v1+json" in bundle and "represent" in bundle["text/plain"]
    assert "bertopic" not in sys.modules and "umap" not in sys.modules


def test_topics_match_the_packages_the_docstrings_come_from(
        explorer: Any, corpus: Corpus) -> None:
    texts, labels = corpus
    table = explorer.topic_table()
    assert len(explorer.topics) == len(texts)
    assert table["size"].sum() == len(texts)
    assert (table["topic"] >= 0).sum() >= 3
    assert all(table.loc[table["topic"] >= 0, "words"].map(len) > 0)
    assert normalized_mutual_info_score(labels, explorer.topics) >= 0.3


def test_documents_of_a_topic_and_a_clear_error_for_an_unknown_one(explorer: Any) -> None:
    found = explorer.documents_of(0, limit=5)
    assert 1 <= len(found) <= 5
    texts = list(explorer.documents)
    assert all(explorer.topics[texts.index(t)] == 0 for t in found)
    with pytest.raises(KeyError, match="no topic 999"):
        explorer.documents_of(999)


def test_umap_runs_in_a_process_gone_before_the_topics_are_represented(
        explorer: Any) -> None:
    import psutil

    # The clustering process has exited, and the topic process never loaded UMAP's
    # (numba's llvmlite) or torch's libraries: it would hold them all session.
    children = psutil.Process().children(recursive=True)
    assert explorer._process.pid in [child.pid for child in children]
    assert not [child.pid for child in children if _mapped(child.pid, "llvmlite")]
    assert not _mapped(explorer._process.pid, "torch")


def test_a_killed_clustering_process_is_a_clear_error_and_loses_nothing(
        corpus: Corpus, tmp_path: Path) -> None:
    import threading

    import psutil

    from meno_jupyter.topics import EmbeddingStore

    texts, _ = corpus
    store = tmp_path / "store"
    explorer = TopicExplorer(texts[:400], store, min_topic_size=5,
                             embedder=ChunkedEmbedder(precision="float16", progress=False))
    killed: list[int] = []
    done = threading.Event()

    def kill_the_clustering_process() -> None:  # the child that loads UMAP's numba
        while not killed and not done.wait(0.05):
            for child in psutil.Process().children(recursive=True):
                try:
                    if _mapped(child.pid, "llvmlite"):
                        child.kill()
                        killed.append(child.pid)
                except psutil.Error:
                    pass

    killer = threading.Thread(target=kill_the_clustering_process, daemon=True)
    killer.start()
    with pytest.raises(TopicProcessError,
                       match=r"the clustering process died \(killed by signal 9\)"):
        try:
            explorer.fit()
        finally:
            done.set()
    killer.join(10)
    assert killed and explorer.topics is None
    kept = EmbeddingStore.open(store, verify=True)  # every chunk checked: nothing damaged
    assert kept.done_docs == kept.meta.n_docs > 0  # and every document still embedded
    explorer.close()


def test_bertopic_figures_come_back_as_plotly_json(explorer: Any) -> None:
    figure = explorer.visualize("barchart", top_n_topics=4)
    assert figure.spec["data"] and figure.spec["data"][0]["type"] == "bar"
    assert "application/vnd.plotly.v1+json" in figure._repr_mimebundle_()
    with pytest.raises(TopicProcessError, match="no figure 'pie'"):
        explorer.visualize("pie")
    # The topic map needs UMAP, which the topic process leaves out until then.
    assert not _mapped(explorer._process.pid, "llvmlite")
    topic_map = explorer.visualize("topics")
    assert topic_map.spec["data"] and topic_map.spec["data"][0]["type"] == "scatter"
    assert _mapped(explorer._process.pid, "llvmlite")


def _mapped(pid: int, library: str) -> bool:
    """Whether a process has a file of ``library`` mapped (a loaded native extension).

    A process that has exited maps nothing (an earlier test's zombie, one gone meanwhile).
    """
    import psutil

    try:
        regions = psutil.Process(pid).memory_maps()
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return False
    return any(f"/{library}/" in region.path for region in regions)


REOPEN = """
import json, sys
from meno_jupyter.topics import TopicExplorer
explorer = TopicExplorer.load(sys.argv[1])
last_text = list(explorer._texts())[-1]
print(json.dumps({"topics": explorer.topics, "n": len(explorer.topic_table()),
                  "last_found": last_text in explorer.documents_of(explorer.topics[-1], 10**6),
                  "torch": "torch" in sys.modules, "bertopic": "bertopic" in sys.modules}))
explorer.close()
"""


def reopen(saved: Path) -> dict[str, Any]:
    """Load a saved session in a new interpreter and report what it holds."""
    import json

    assert (saved / "session.json").exists()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(REOPEN), str(saved)],
                          capture_output=True, text=True, timeout=300, check=True)
    reopened: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return reopened


def test_a_saved_session_reopens_in_a_new_process(explorer: Any, tmp_path: Path) -> None:
    reopened = reopen(explorer.save(tmp_path / "session"))
    assert reopened["topics"] == explorer.topics
    assert reopened["n"] == len(explorer.topic_table())
    assert not reopened["torch"] and not reopened["bertopic"]
    # The fit's stand-in for the reduction step is not saved: the model is BERTopic's alone.
    saved = b"".join(path.read_bytes() for path in (tmp_path / "session").rglob("*")
                     if path.is_file())
    assert b"BaseDimensionalityReduction" in saved and b"_ReducedAlready" not in saved


def test_bad_settings_and_sessions_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="min_topic_size"):
        TopicExplorer(["a", "b"], tmp_path / "s", min_topic_size=1)
    with pytest.raises(FileNotFoundError, match="no saved topic session"):
        TopicExplorer.load(tmp_path)
    with pytest.raises(ValueError, match="corpus is empty"):
        TopicExplorer([], tmp_path / "e").fit()
    with pytest.raises(RuntimeError, match="fit"):
        TopicExplorer(["a"], tmp_path / "u").topic_table()


def test_online_mode_fits_chunk_by_chunk(corpus: Corpus, explorer: Any) -> None:
    texts, labels = corpus
    online = TopicExplorer(texts, explorer.store_dir, mode="online", n_topics=10,
                           embedder=explorer.embedder)
    try:
        timeline = online.fit()
        assert [s.name for s in timeline.stages] == ["embed", "load", "cluster", "partial_fit",
                                                     "assign"]
        assert timeline.stages[0].duration_s < 5  # the store was complete: nothing embedded
        assert len(online.topics) == len(texts)
        assert set(online.topics) <= set(range(10))
        assert online.topic_table()["size"].sum() == len(texts)
        assert normalized_mutual_info_score(labels, online.topics) >= 0.3
    finally:
        online.close()
    with pytest.raises(ValueError, match="mode"):
        TopicExplorer(texts, explorer.store_dir, mode="streaming")


def test_update_adds_documents_and_reports_topic_stability(
        corpus: Corpus, tmp_path: Path) -> None:
    texts, labels = corpus
    first, later = texts[:200], texts[200:]
    online = TopicExplorer(first, tmp_path / "store", mode="online", n_topics=8,
                           embedder=ChunkedEmbedder(chunk_size=50, progress=False))
    try:
        online.fit()
        before = list(online.topics)
        report = online.update(later)
        assert report.new_docs == len(later)
        assert len(online.topics) == len(texts)
        assert report.stability == sum(
            a == b for a, b in zip(before, online.topics, strict=False)) / len(before)
        assert report.stability >= 0.5
        assert 0.0 < report.word_overlap <= 1.0
        assert [s.name for s in report.timeline.stages] == ["embed", "cluster", "partial_fit",
                                                            "assign"]
        assert "kept their topic" in str(report)
        # documents_of sees the new documents too
        assigned = dict(zip(texts, online.topics, strict=False))
        found = online.documents_of(online.topics[-1], limit=500)
        assert later[-1] in found and all(assigned[t] == online.topics[-1] for t in found)
        assert normalized_mutual_info_score(labels, online.topics) >= 0.25
        # a session saved after update reopens with the new documents
        reopened = reopen(online.save(tmp_path / "session"))
        assert reopened["topics"] == online.topics and reopened["last_found"]
        # merging works on an online fit too
        table = online.topic_table()
        first_two = table.loc[table["size"] > 0, "topic"].tolist()[:2]
        merged = online.merge_topics(first_two)
        assert len(merged) == len(table) - 1
        assert merged["size"].sum() == len(texts)
    finally:
        online.close()


def test_update_needs_an_online_fit(explorer: Any) -> None:
    with pytest.raises(ValueError, match="mode='online'"):
        explorer.update(["more text"])


def groups(topics: list[int]) -> set[frozenset[int]]:
    """The partition of the documents (by index) that ``topics`` makes."""
    members: dict[int, set[int]] = {}
    for index, topic in enumerate(topics):
        members.setdefault(topic, set()).add(index)
    return {frozenset(m) for m in members.values()}


def test_merge_and_rename_topics(explorer: Any) -> None:
    # last in this module: it changes the shared explorer's topics
    before = list(explorer.topics)
    table = explorer.topic_table()
    a, b = table.loc[table["topic"] >= 0, "topic"].tolist()[:2]
    merged = explorer.merge_topics([a, b])
    assert len(merged) == len(table) - 1 and merged["size"].sum() == len(before)
    joined = {i for i, t in enumerate(before) if t in (a, b)}
    expected = {g for g in groups(before) if not g <= joined} | {frozenset(joined)}
    assert groups(explorer.topics) == expected  # ids may be renumbered; the partition is not
    topic = explorer.topics[min(joined)]
    renamed = explorer.rename_topics({topic: "merged topic"})
    assert renamed.loc[renamed["topic"] == topic, "name"].item() == "merged topic"
    other = renamed.loc[(renamed["topic"] >= 0) & (renamed["topic"] != topic), "topic"].iloc[0]
    renamed = explorer.rename_topics({int(other): "another"})  # earlier names are kept
    assert renamed.loc[renamed["topic"] == topic, "name"].item() == "merged topic"
    with pytest.raises(KeyError, match="no topic"):
        explorer.merge_topics([topic, 999])
    with pytest.raises(ValueError, match="at least two different topics"):
        explorer.merge_topics([topic, topic])
    with pytest.raises(ValueError, match="more than one group"):
        explorer.merge_topics([topic, int(other)], [int(other), -1])
    with pytest.raises(ValueError, match="name the topics"):
        explorer.merge_topics()
    with pytest.raises(KeyError, match="no topic"):
        explorer.rename_topics({999: "x"})
    with pytest.raises(ValueError, match="non-empty strings"):
        explorer.rename_topics({topic: ""})


@pytest.mark.parametrize("block", [2048, 300, 64, 9])
def test_exact_neighbours_match_a_brute_force_search(block: int) -> None:
    # One block (sampled start), blocks read both ways, and a last block smaller than k.
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    from meno_jupyter.topics._fit_worker import exact_cosine_neighbours

    rows = np.random.default_rng(7).normal(size=(500, 24)).astype(np.float32)
    rows[11] = rows[10]  # a duplicate: each of the two still comes first in its own list
    indices, distances = exact_cosine_neighbours(rows, 6, block=block)
    expected_d, expected_i = NearestNeighbors(n_neighbors=6, metric="cosine",
                                              algorithm="brute").fit(rows).kneighbors(rows)
    assert (indices[:, 0] == np.arange(500)).all() and (distances[:, 0] == 0).all()
    np.testing.assert_allclose(distances, expected_d, atol=1e-5)
    assert (np.sort(indices[:, 1:], axis=1) == np.sort(expected_i[:, 1:], axis=1)).all(
        axis=1).mean() > 0.99  # the same neighbours but where two are as near
    assert {int(indices[10, 1]), int(indices[11, 1])} == {10, 11}
    assert (np.diff(distances, axis=1) >= 0).all()


UMAP_WITHOUT_NNDESCENT = """
import json, sys
import numpy as np
from meno_jupyter.topics._fit_worker import (_umap_class, exact_cosine_neighbours,
                                             reduce_given_neighbours)

def kept_neighbours(rows, reduced):
    # the share of each row's 10 nearest neighbours that are still among them once reduced
    before = exact_cosine_neighbours(rows, 11)[0][:, 1:]
    from sklearn.neighbors import NearestNeighbors
    after = NearestNeighbors(n_neighbors=11).fit(reduced).kneighbors(reduced)[1][:, 1:]
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(before, after)]))

def main():
    rows = np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)
    ours = reduce_given_neighbours(rows, n_neighbors=10, n_components=2, seed=5)
    stand_in = "pynndescent.pynndescent_" not in sys.modules
    again = reduce_given_neighbours(rows, n_neighbors=10, n_components=2, seed=5)
    knn = (*exact_cosine_neighbours(rows, 10), None)
    options = dict(n_neighbors=10, n_components=2, metric="cosine", random_state=5,
                   min_dist=0.0, precomputed_knn=knn)
    given = _umap_class(nndescent=False)(**options).fit_transform(rows)
    stand_in = stand_in and "pynndescent.pynndescent_" not in sys.modules
    real = _umap_class(nndescent=True)
    searched = real(n_neighbors=10, n_components=2, random_state=5).fit_transform(rows)
    print(json.dumps({"stand_in": stand_in, "real_after": "pynndescent.pynndescent_" in sys.modules,
                      "same": bool(np.array_equal(given, real(**options).fit_transform(rows))),
                      "searched": searched.shape, "repeats": bool(np.array_equal(ours, again)),
                      "kept": [kept_neighbours(rows, ours), kept_neighbours(rows, given)]}))

if __name__ == "__main__":
    main()
"""


def test_umap_given_the_neighbours_runs_without_pynndescent() -> None:
    # The clustering process passes exact neighbours: pynndescent's compiled search is
    # not loaded, UMAP's steps called without the class keep the neighbourhoods as well as
    # the class does and repeat for a seed, and the real package comes when needed.
    import json

    done = subprocess.run([sys.executable, "-c", UMAP_WITHOUT_NNDESCENT], check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ours, umaps = result.pop("kept")
    assert result == {"stand_in": True, "real_after": True, "same": True, "searched": [300, 2],
                      "repeats": True}
    assert ours >= umaps - 0.03, (ours, umaps)


def test_spectral_start_is_umaps_up_to_sign() -> None:
    import numpy as np
    from sklearn.utils import check_random_state
    from umap.spectral import spectral_layout
    from umap.umap_ import fuzzy_simplicial_set

    from meno_jupyter.topics._fit_worker import exact_cosine_neighbours, spectral_start

    rows = np.random.default_rng(4).normal(size=(3000, 16)).astype(np.float32)
    indices, distances = exact_cosine_neighbours(rows, 15)
    graph = fuzzy_simplicial_set(rows, 15, check_random_state(0), "cosine", {}, indices,
                                 distances, False, 1.0, 1.0, True)[0]
    ours = spectral_start(graph, 5)
    umaps = spectral_layout(rows, graph, 5, check_random_state(0))  # sqrt(n) Lanczos vectors
    signs = np.sign(np.sum(ours * umaps, axis=0))
    np.testing.assert_allclose(ours, umaps * signs, atol=1e-4)
    largest = ours[np.abs(ours).argmax(axis=0), np.arange(5)]
    assert (largest > 0).all()


def test_a_graph_in_pieces_starts_as_umap_starts_it() -> None:
    # Separate blobs: UMAP's multi-component start, each piece's spectral start from ours.
    import numpy as np
    from scipy.sparse.csgraph import connected_components
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    from sklearn.utils import check_random_state
    from umap.spectral import multi_component_layout
    from umap.umap_ import fuzzy_simplicial_set

    from meno_jupyter.topics._fit_worker import (
        exact_cosine_neighbours,
        pieces_start,
        reduce_given_neighbours,
    )

    generator = np.random.default_rng(5)
    centres = np.eye(24, dtype=np.float32)[:3] * 10
    truth = np.repeat(np.arange(3), [400, 300, 20])
    rows = (centres[truth] + generator.normal(size=(len(truth), 24))).astype(np.float32)
    indices, distances = exact_cosine_neighbours(rows, 15)
    graph = fuzzy_simplicial_set(rows, 15, check_random_state(0), "cosine", {}, indices,
                                 distances, False, 1.0, 1.0, True)[0]
    pieces, labels = connected_components(graph)
    assert pieces == 3
    ours = pieces_start(rows, graph, pieces, labels, dim=5, random=check_random_state(1))
    umaps = multi_component_layout(rows, graph, pieces, labels, 5, check_random_state(1),
                                   metric="cosine")
    # Few pieces sit on the axes (+e1, +e2, -e1); each spread around its place, up to signs.
    places = np.zeros((3, 5))
    places[0, 0], places[1, 1], places[2, 0] = 1, 1, -1
    for label in range(pieces):
        inside = labels == label
        spread, umaps_spread = ours[inside] - places[label], umaps[inside] - places[label]
        signs = np.sign(np.sum(spread * umaps_spread, axis=0))
        np.testing.assert_allclose(spread, umaps_spread * signs, atol=1e-3)
    reduced = reduce_given_neighbours(rows, n_neighbors=15, n_components=5, seed=3)
    found = KMeans(3, n_init=4, random_state=0).fit_predict(reduced)
    assert normalized_mutual_info_score(truth, found) == 1.0


WRITE_TEXTS = """
import json, sys
from pathlib import Path
from meno_jupyter.topics.documents import Documents
from meno_jupyter.topics.explorer import TopicExplorer
from meno_jupyter.topics.store import DOCS_FILE

corpus, folder = sys.argv[1:3]
TopicExplorer._write_docs(Documents(corpus, "text"), Path(folder))
texts = list(Documents(Path(folder) / DOCS_FILE, "text"))
print(json.dumps({"pandas": "pandas" in sys.modules, "texts": texts}))
"""


def test_texts_from_a_file_are_kept_without_importing_pandas(tmp_path: Path) -> None:
    # A kernel that reads its corpus from a file holds no pandas for the fit (~50 MiB).
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["plain", "", "ünïcödé ✓ 漢字", "a\nnew line", "x" * 3_000] * 2_401  # 2 batches
    pq.write_table(pa.table({"text": texts}), tmp_path / "corpus.parquet")
    (tmp_path / "store").mkdir()
    done = subprocess.run([sys.executable, "-c", WRITE_TEXTS, str(tmp_path / "corpus.parquet"),
                           str(tmp_path / "store")], check=False, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["pandas"] is False
    assert result["texts"] == texts
