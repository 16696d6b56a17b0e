"""TorchScript modules (``model.pt``), called with the inputs in configured order."""

from __future__ import annotations

import numpy as np

from inferplane.oip.errors import BadRequest, LoadError
from inferplane.oip.runtimes.base import Runtime, find_model_file, require


class TorchScriptRuntime(Runtime):
    """Inputs and outputs must be configured (a TorchScript file carries no names)."""

    platform = "pytorch_libtorch"

    def load(self) -> None:
        self.torch = torch = require("torch", "torch", "torchscript")
        if not self.inputs or not self.outputs:
            raise LoadError("runtime 'torchscript' needs inputs and outputs in config.yaml")
        path = find_model_file(self.version_dir, (".pt", ".pth", ".torchscript"), self.config.parameters.get("file"))
        torch.set_num_threads(int(self.config.parameters.get("threads", 1)))
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - torch raises many error types
            raise LoadError(f"cannot load {path}: {exc}") from None

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        torch = self.torch
        try:
            args = [torch.from_numpy(np.ascontiguousarray(inputs[spec.name])) for spec in self.inputs]
            with torch.inference_mode():
                result = self.module(*args)
        except KeyError as exc:
            raise BadRequest(f"missing input {exc}") from None
        except RuntimeError as exc:
            raise BadRequest(f"torchscript: {exc}") from None
        if isinstance(result, dict):
            values = {k: v for k, v in result.items()}
        else:
            tensors = result if isinstance(result, (tuple, list)) else (result,)
            values = {spec.name: t for spec, t in zip(self.outputs, tensors)}
        return {name: values[name].detach().numpy() for name in outputs}
