"""The benchmark model under KServe's Python model server (run with KServe's own venv).

    python kserve_model.py --model_dir DIR --http_port P
"""

from __future__ import annotations

import argparse

import joblib
import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse


class SklearnModel(kserve.Model):
    """What KServe's sklearnserver does: joblib.load, then predict_proba on the v2 input."""

    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict | None = None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        proba = np.asarray(self.model.predict_proba(x), dtype=np.float32)
        output = InferOutput(name="predict_proba", shape=list(proba.shape), datatype="FP32")
        output.set_data_from_numpy(proba, binary_data=False)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=[output])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--served_name", default="fraud")
    args, _ = parser.parse_known_args()
    kserve.ModelServer(http_port=args.http_port, enable_grpc=False, workers=1, enable_latency_logging=False).start([SklearnModel(args.served_name, args.model_path)])
