"""Model rollouts: weighted canaries through the picker's model rewrites, gated on its metrics.

``state`` (a rollout as an InferenceModelRewrite, the rewrites file), ``actions`` (start,
set-weight, promote, rollback), ``gate`` (the pure metric gate), ``observe`` (per-target numbers
from the picker's metrics), ``auto`` (the stepping controller), ``target`` (finding the picker),
``cli`` (``inferplane rollout``). See docs/rollouts.md.
"""
