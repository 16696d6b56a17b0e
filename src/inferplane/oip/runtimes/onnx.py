"""ONNX models run with onnxruntime; inputs and outputs are read from the graph unless configured."""

from __future__ import annotations

import numpy as np

from inferplane.oip.config import TensorSpec
from inferplane.oip.errors import BadRequest, LoadError
from inferplane.oip.runtimes.base import Runtime, find_model_file, require

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class OnnxRuntime(Runtime):
    """``model.onnx``; ``parameters.intra_op_threads`` sets onnxruntime's threads per call (default 1)."""

    platform = "onnxruntime_onnx"

    def load(self) -> None:
        ort = require("onnxruntime", "onnxruntime", "onnx")
        path = find_model_file(self.version_dir, (".onnx",), self.config.parameters.get("file"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.config.parameters.get("intra_op_threads", 1))
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
            raise LoadError(f"cannot load {path}: {exc}") from None
        if not self.inputs:
            self.inputs = [self._spec(arg) for arg in self.session.get_inputs()]
        if not self.outputs:
            self.outputs = [self._spec(arg) for arg in self.session.get_outputs()]
        graph_outputs = {arg.name for arg in self.session.get_outputs()}
        for spec in self.outputs:
            if spec.name not in graph_outputs:
                raise LoadError(f"output '{spec.name}' is not an output of {path.name}")

    def _spec(self, arg) -> TensorSpec:
        datatype = _ORT_TYPES.get(arg.type)
        if datatype is None:
            raise LoadError(f"tensor '{arg.name}' has a type ({arg.type}) the v2 protocol cannot carry; set zipmap off")
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        if self.config.max_batch_size > 0 and shape:
            shape = shape[1:]
        return TensorSpec(name=arg.name, datatype=datatype, shape=shape)

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(outputs, inputs)
        except Exception as exc:  # noqa: BLE001 - bad shapes or types surface here
            raise BadRequest(f"onnxruntime: {exc}") from None
        return dict(zip(outputs, (np.asarray(v) for v in values)))
