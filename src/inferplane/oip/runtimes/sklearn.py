"""scikit-learn estimators saved with joblib; outputs are named after the estimator's methods."""

from __future__ import annotations

import numpy as np

from inferplane.oip.config import TensorSpec
from inferplane.oip.errors import BadRequest, LoadError
from inferplane.oip.runtimes.base import Runtime, find_model_file, require

METHODS = ("predict", "predict_proba", "decision_function", "transform")


class SklearnRuntime(Runtime):
    """``model.joblib`` (or ``.pkl``); one FP32/FP64 input, outputs ``predict``, ``predict_proba``..."""

    platform = "sklearn"

    def load(self) -> None:
        require("sklearn", "scikit-learn", "sklearn")
        joblib = require("joblib", "joblib", "sklearn")
        path = find_model_file(self.version_dir, (".joblib", ".pkl", ".pickle"), self.config.parameters.get("file"))
        try:
            self.model = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - any unpickling problem is a load error
            raise LoadError(f"cannot load {path}: {exc}") from None
        if not self.outputs:
            self.outputs = [TensorSpec(name="predict", datatype="FP64", shape=[])]
        for spec in self.outputs:
            if spec.name not in METHODS or not hasattr(self.model, spec.name):
                raise LoadError(f"output '{spec.name}': the estimator has no method of that name")
        if not self.inputs:
            features = getattr(self.model, "n_features_in_", -1)
            self.inputs = [TensorSpec(name="input-0", datatype="FP32", shape=[int(features)])]

    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x = self.single_input(inputs)
        result = {}
        for name in outputs:
            if name not in METHODS:
                raise BadRequest(f"unknown output '{name}'")
            result[name] = np.asarray(getattr(self.model, name)(x))
        return result
