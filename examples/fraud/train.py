"""Train the fraud model on generated data; write it to the repository as joblib and as ONNX.

    python examples/fraud/train.py [--repository examples/fraud/repository]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from data import FEATURES, transactions


def train(repository: Path, n: int = 20000) -> dict[str, float]:
    """Fit, export and evaluate; returns held-out metrics."""
    import joblib
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    x, y = transactions(n)
    split = int(n * 0.8)
    model = RandomForestClassifier(n_estimators=60, max_depth=10, min_samples_leaf=5, n_jobs=1, random_state=0)
    model.fit(x[:split], y[:split])
    auc = float(roc_auc_score(y[split:], model.predict_proba(x[split:])[:, 1]))
    sk_dir = repository / "fraud" / "1"
    onnx_dir = repository / "fraud-onnx" / "1"
    sk_dir.mkdir(parents=True, exist_ok=True)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, sk_dir / "model.joblib")
    inputs = [("transaction", FloatTensorType([None, len(FEATURES)]))]
    onx = to_onnx(model, initial_types=inputs, options={id(model): {"zipmap": False}}, target_opset=17)
    (onnx_dir / "model.onnx").write_bytes(onx.SerializeToString())
    return {"auc": auc, "fraud_rate": float(np.mean(y)), "features": len(FEATURES)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path(__file__).parent / "repository")
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    print(train(args.repository, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
