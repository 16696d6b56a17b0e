"""XGBoost boosters saved as ``model.json`` / ``model.ubj`` / ``model.bst``."""

from __future__ import annotations

import numpy as np

from inferplane.oip.config import TensorSpec
from inferplane.oip.errors import LoadError
from inferplane.oip.runtimes.base import Runtime, find_model_file, require


class XGBoostRuntime(Runtime):
    """One numeric input; output ``predict`` (margin or probability, as the objective gives)."""

    platform = "xgboost"

    def load(self) -> None:
        xgb = require("xgboost", "xgboost", "xgboost")
        path = find_model_file(self.version_dir, (".json", ".ubj", ".bst"), self.config.parameters.get("file"))
        self.booster = xgb.Booster()
        try:
            self.booster.load_model(str(path))
        except Exception as exc:  # noqa: BLE001 - xgboost raises its own error types
            raise LoadError(f"cannot load {path}: {exc}") from None
        self.booster.set_param({"nthread": int(self.config.parameters.get("nthread", 1))})
        if not self.outputs:
            self.outputs = [TensorSpec(name="predict", datatype="FP32", shape=[])]
        if not self.inputs:
            self.inputs = [TensorSpec(name="input-0", datatype="FP32", shape=[self.booster.num_features()])]

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x = self.single_input(inputs)
        prediction = np.asarray(self.booster.inplace_predict(x))
        return {name: prediction for name in outputs}
