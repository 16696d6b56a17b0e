"""A generated card-transaction data set with a known fraud pattern (no download)."""

from __future__ import annotations

import numpy as np

FEATURES = ("amount", "hour", "merchant_risk", "distance_km", "txn_last_24h", "card_present", "foreign")


def transactions(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``n`` transactions (FP32 features in FEATURES order) and their fraud labels (about 3 % fraud)."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.0, n)
    hour = rng.integers(0, 24, n).astype(float)
    merchant_risk = rng.beta(2, 8, n)
    distance = rng.exponential(15.0, n)
    velocity = rng.poisson(2.0, n).astype(float)
    card_present = (rng.random(n) < 0.7).astype(float)
    foreign = (rng.random(n) < 0.08).astype(float)
    night = ((hour < 5) | (hour > 22)).astype(float)
    score = (
        -6.3
        + 0.9 * np.log1p(amount / 100)
        + 4.0 * merchant_risk
        + 0.02 * distance
        + 0.35 * velocity
        - 1.5 * card_present
        + 1.4 * foreign
        + 1.0 * night
    )
    fraud = rng.random(n) < 1 / (1 + np.exp(-score))
    x = np.column_stack([amount, hour, merchant_risk, distance, velocity, card_present, foreign]).astype(np.float32)
    return x, fraud.astype(np.int64)
