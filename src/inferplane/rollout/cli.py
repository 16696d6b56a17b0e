"""``inferplane rollout``: canary a model version through the picker's weighted model rewrites.

``start`` / ``set-weight`` / ``promote`` / ``rollback`` write the rollout into the picker's
rewrites file (applied on its next poll, no restart); ``status`` adds the per-target numbers read
from the picker's metrics. With ``--kubernetes`` they print the ``InferenceModelRewrite``
instead, for ``kubectl apply -f -``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from inferplane.rollout.state import RolloutError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """``30s``, ``2m``, ``500ms``, ``1h`` or plain seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 30s, 2m, 500ms)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def steps(text: str) -> list[int]:
    """``10,25,50,100``: increasing canary percentages."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid steps {text!r}: expected percentages like 10,25,50,100") from None
    if not values or any(not 0 < v <= 100 for v in values) or values != sorted(set(values)):
        raise argparse.ArgumentTypeError(f"invalid steps {text!r}: increasing percentages from 1 to 100")
    return values


def _number(convert: Callable[[str], float], what: str, accepts: Callable[[float], bool], rule: str,
            form: str = "") -> Callable[[str], float]:
    """An argparse type: ``convert`` the text, then require ``accepts``; errors name the value and ``rule``."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}{form}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: {rule}")
        return value

    return parse


_percent = _number(int, "weight", lambda v: 0 <= v <= 100, "from 0 to 100", ": a whole percentage")
_fraction = _number(float, "rate", lambda v: 0 <= v <= 1, "from 0 to 1")
_positive = _number(float, "ratio", lambda v: v > 0, "must be above 0")


def _target_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("where the picker is")
    where.add_argument("--run-dir", help="run directory of 'inferplane up' (its picker.yaml names the file)")
    where.add_argument("--picker-config", help="the picker's YAML configuration (section 'picker')")
    where.add_argument("--rewrites-file", help="the picker's model_rewrites_file (wins over the configuration)")
    where.add_argument("--metrics-url", help="the picker's Prometheus URL, e.g. http://127.0.0.1:9090/metrics")
    where.add_argument("--kubernetes", action="store_true",
                       help="print the InferenceModelRewrite YAML (for kubectl apply -f -) instead of writing the file")
    where.add_argument("--pool", default="", help="InferencePool the rewrite belongs to (spec.poolRef.name)")
    where.add_argument("--namespace", default="", help="namespace of the printed resource")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="canary a model version: weighted rewrites, metric-gated steps, promote, roll back",
        description="Shift a model's traffic to a new version through the picker's weighted model rewrites.",
    )
    commands = parser.add_subparsers(dest="rollout_command", metavar="ACTION", required=True)

    start = commands.add_parser("start", help="send a share of MODEL's requests to a canary version")
    start.add_argument("model", metavar="MODEL", help="the model name clients send")
    start.add_argument("--canary", required=True, help="the new version's served model name")
    start.add_argument("--stable", help="the current version (default: the last rollout's, else MODEL itself)")
    start.add_argument("--weight", type=_percent, default=10, help="percent to the canary (default 10)")
    auto = start.add_argument_group("automatic rollout (gated on the picker's metrics)")
    auto.add_argument("--steps", type=steps, help="canary percentages to walk, e.g. 10,25,50,100; promote after the last")
    auto.add_argument("--interval", type=duration, default=30.0, help="time at each step before judging (default 30s)")
    auto.add_argument("--max-error-rate", type=_fraction, default=0.05, help="canary error rate limit (default 0.05)")
    auto.add_argument("--max-ttft-p90-ratio", type=_positive, default=1.5,
                      help="canary TTFT p90 / stable TTFT p90 limit (default 1.5)")
    auto.add_argument("--min-requests", type=int, default=20,
                      help="canary requests a window needs to be judged (default 20)")
    auto.add_argument("--max-holds", type=int, default=10,
                      help="windows in a row with too few canary requests before rolling back (default 10)")
    _target_flags(start)

    weight = commands.add_parser("set-weight", help="change the canary's share")
    weight.add_argument("model", metavar="MODEL")
    weight.add_argument("weight", metavar="PERCENT", type=_percent)
    _target_flags(weight)
    for name, text in (("promote", "all traffic to the canary, which becomes the stable version"),
                       ("rollback", "all traffic back to the stable version")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("model", metavar="MODEL")
        _target_flags(sub)
    status = commands.add_parser("status", help="weights, per-version requests, error rate and TTFT p90")
    status.add_argument("model", metavar="MODEL", nargs="?", help="one model (default: every rollout)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _target_flags(status)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except RolloutError as exc:
        print(f"inferplane rollout: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from inferplane.rollout import actions
    from inferplane.rollout.state import RewritesFile, Rollout, dump_resources, to_resource
    from inferplane.rollout.target import resolve_target

    target = resolve_target(args.run_dir, args.picker_config, args.rewrites_file, args.metrics_url)
    pool = args.pool or target.pool
    if target.rewrites_file is None and not args.kubernetes:
        raise RolloutError("say where the picker is: --run-dir, --picker-config or --rewrites-file "
                           "(or --kubernetes to print the resource)")
    store = RewritesFile(target.rewrites_file, pool) if target.rewrites_file else None
    command = args.rollout_command

    if command == "status":
        return _status(args, store, target.metrics_url)

    def current(model: str) -> Rollout:
        if store is None:
            raise RolloutError(f"--kubernetes without a file: pass --rewrites-file (e.g. the YAML printed by "
                               f"'rollout start {model} ... --kubernetes') to change a rollout")
        return store.get(model)

    def save(rollout: Rollout) -> None:
        if args.kubernetes:
            sys.stdout.write(dump_resources([to_resource(rollout, pool, args.namespace)]))
        else:
            assert store is not None
            store.save(rollout)

    if command == "start":
        existing = store.rollouts().get(args.model) if store is not None else None
        rollout = actions.start(existing, args.model, args.canary, args.steps[0] if args.steps else args.weight,
                                args.stable)
        if args.steps:
            if args.kubernetes:
                raise RolloutError("--steps needs the running picker (its metrics); not with --kubernetes")
            return _auto(args, rollout, save, target.metrics_url)
        save(rollout)
    elif command == "set-weight":
        rollout = actions.set_weight(current(args.model), args.weight)
        save(rollout)
    elif command == "promote":
        rollout = actions.promote(current(args.model))
        save(rollout)
    else:
        rollout = actions.rollback(current(args.model))
        save(rollout)
    if not args.kubernetes:
        print(_weights_line(rollout))
    return 0


def _weights_line(rollout: Any) -> str:
    weights = ", ".join(f"{target} {weight}%" for target, weight in rollout.weights().items())
    return f"{rollout.model}: {rollout.phase.value}: {weights}"


def _auto(args: argparse.Namespace, rollout: Any, save: Any, metrics_url: str | None) -> int:
    from inferplane.rollout.auto import AutoPlan, run_auto
    from inferplane.rollout.gate import GateLimits
    from inferplane.rollout.observe import MetricsUnavailable, fetch_snapshot
    from inferplane.rollout.state import Phase

    if not metrics_url:
        raise RolloutError("--steps needs the picker's metrics: pass --metrics-url, --run-dir or --picker-config")
    limits = GateLimits(args.max_error_rate, args.max_ttft_p90_ratio, max(1, args.min_requests))
    plan = AutoPlan(args.steps, args.interval, limits, max(1, args.max_holds))
    try:
        fetch_snapshot(metrics_url)  # fail before touching any weight
        final = run_auto(rollout, plan, save, lambda: fetch_snapshot(metrics_url),
                         say=lambda line: print(line, flush=True))
    except MetricsUnavailable as exc:
        raise RolloutError(f"{exc}; the weights stay as they are (see 'rollout status')") from None
    except KeyboardInterrupt:
        print(f"interrupted: {args.model}'s weights stay as they are; continue with "
              "'rollout set-weight', 'promote' or 'rollback'", file=sys.stderr)
        return 130
    print(_weights_line(final) + f" ({final.message})")
    return 0 if final.phase == Phase.PROMOTED else 1


def _status(args: argparse.Namespace, store: Any, metrics_url: str | None) -> int:
    from inferplane.rollout.observe import MetricsUnavailable, fetch_snapshot, target_stats

    if store is None:
        raise RolloutError("status needs the rewrites file: --run-dir, --picker-config or --rewrites-file")
    rollouts = store.rollouts()
    if args.model:
        rollouts = {args.model: store.get(args.model)}
    snapshot = None
    problem = ""
    if metrics_url:
        try:
            snapshot = fetch_snapshot(metrics_url)
        except MetricsUnavailable as exc:
            problem = str(exc)
    report = []
    for rollout in rollouts.values():
        versions = []
        for role, name in (("stable", rollout.stable), ("canary", rollout.canary)):
            if not name:
                continue
            entry: dict[str, Any] = {"role": role, "model": name, "weight": rollout.weights()[name]}
            if snapshot is not None:
                stats = target_stats(snapshot, rollout.model, name)
                entry.update(requests=stats.requests, errors=stats.errors, error_rate=stats.error_rate,
                             ttft_p90_s=stats.ttft_p90)
            versions.append(entry)
        report.append({"model": rollout.model, "phase": rollout.phase.value, "message": rollout.message,
                       "versions": versions})
    if args.json:
        print(json.dumps({"rollouts": report, "metrics_error": problem or None}, indent=1))
        return 0
    if not report:
        print(f"no rollouts in {store.path}")
    for item in report:
        print(f"{item['model']}: {item['phase']}" + (f" ({item['message']})" if item["message"] else ""))
        for v in item["versions"]:
            line = f"  {v['role']:<6} {v['model']:<30} {v['weight']:>3}%"
            if "requests" in v:
                p90 = "-" if v["ttft_p90_s"] is None else f"{v['ttft_p90_s'] * 1000:.0f} ms"
                line += (f"  requests {v['requests']:.0f}  errors {v['errors']:.0f} ({v['error_rate']:.1%})"
                         f"  TTFT p90 {p90}")
            print(line)
    if problem:
        print(f"(no request numbers: {problem})", file=sys.stderr)
    return 0
