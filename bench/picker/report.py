"""bench/results/picker.md from picker.json: before/after tables, then one section per run."""

from __future__ import annotations

from pathlib import Path

_GATEWAY_COLUMNS = (
    ("offered_rps", "offered req/s"), ("rps", "req/s"), ("non_2xx", "non-2xx"), ("errors", "errors"),
    ("latency_ms_p50", "p50 ms"), ("latency_ms_p99", "p99 ms"),
    ("picker_cpu_ms_per_req", "picker CPU ms/req"), ("picker_cpu_ms_per_req_net", "net of scraping"),
    ("picker_cores", "picker cores"), ("envoy_cpu_ms_per_req", "Envoy CPU ms/req"),
    ("backends_cpu_ms_per_req", "servers ms/req"), ("wrk_cpu_ms_per_req", "wrk ms/req"),
    ("machine_busy_pct", "machine busy %"),
)


def _unpaced(run: dict) -> dict:
    return run["gateway"][-1] if run.get("gateway") else {}


def _best_step(run: dict) -> dict:
    """The Envoy step that served the most requests/s: the most requests, so scraping (subtracted at the
    idle phase's CPU per scrape) weighs least on its per-request figures."""
    steps = [step for step in run.get("gateway", []) if step["requests"] > 0]
    return max(steps, key=lambda step: step["rps"]) if steps else {}


#: (row title, how to read it from a run); missing values print as "–".
_COMPARED = (
    ("handler alone, in-process (no gRPC), CPU ms/request", lambda r: r.get("handler", {}).get("handler_cpu_ms_per_req")),
    ("picker alone (raw HTTP/2 replay), req/s", lambda r: r["direct"]["rps"]),
    ("picker alone, picker cores busy", lambda r: r["direct"]["picker_cores"]),
    ("picker alone, CPU ms/request", lambda r: r["direct"]["picker_cpu_ms_per_req"]),
    ("picker alone, net of scraping", lambda r: r["direct"]["picker_cpu_ms_per_req_net"]),
    ("picker alone (grpcio client replay), req/s", lambda r: r.get("direct_grpcio", {}).get("rps")),
    ("picker alone (grpcio client), CPU ms/request", lambda r: r.get("direct_grpcio", {}).get("picker_cpu_ms_per_req")),
    ("through Envoy, best step, req/s", lambda r: _best_step(r).get("rps", 0.0)),
    ("through Envoy (best step), picker CPU ms/request", lambda r: _best_step(r).get("picker_cpu_ms_per_req")),
    ("through Envoy (best step), picker net of scraping", lambda r: _best_step(r).get("picker_cpu_ms_per_req_net")),
    ("through Envoy (best step), Envoy CPU ms/request", lambda r: _best_step(r).get("envoy_cpu_ms_per_req")),
    ("scraping: picker CPU ms per second", lambda r: r["idle"]["picker_cpu_ms_per_s"]),
    ("scraping: scrapes per second", lambda r: r["idle"]["scrapes_per_s"]),
    ("scraping: picker CPU ms per scrape", lambda r: r["idle"]["picker_cpu_ms_per_scrape"]),
    ("scheduling p50 / p99 ms (tiny prompt)", lambda r: _schedule(r, 0)),
    ("scheduling p50 / p99 ms (2,000-char prompt)", lambda r: _schedule(r, 2000)),
    ("picker cores for 1,000 req/s + scraping: picker alone", lambda r: _cores_at_1000(r, r["direct"])),
    ("picker cores for 1,000 req/s + scraping: through Envoy", lambda r: _cores_at_1000(r, _best_step(r))),
    ("picker start to ready, s", lambda r: r.get("picker_ready_s")),
    ("load average before → after", lambda r: f"{r['load_before'][0]} → {r['load_after'][0]}"),
)


def _cores_at_1000(run: dict, phase: dict) -> float | None:
    """Per-request CPU net of scraping x 1,000 plus the scraping the endpoints are owed (one scrape each per 50 ms)."""
    net = phase.get("picker_cpu_ms_per_req_net")
    idle = run["idle"]
    if net is None or net <= 0 or "scrapes_per_s_configured" not in idle:
        return None
    return round((net * 1000 + idle["picker_cpu_ms_per_scrape"] * idle["scrapes_per_s_configured"]) / 1000, 2)


def _schedule(run: dict, chars: int) -> str | None:
    for s in run["scheduling"]:
        if s["prompt_chars"] == chars:
            return f"{s['schedule_ms_p50']} / {s['schedule_ms_p99']}"
    return None


def _comparison(before: dict, after: dict, endpoints: str) -> list[str]:
    lines = [f"### {endpoints} endpoints", "", "| | before | after |", "|---|---|---|"]
    for title, read in _COMPARED:
        values = []
        for run in (before, after):
            try:
                value = read(run)
            except (KeyError, IndexError):
                value = None
            # a negative net figure is the scraping estimate exceeding what a starved picker did
            values.append("–" if value is None or (isinstance(value, float) and value < 0) else str(value))
        lines.append(f"| {title} | {values[0]} | {values[1]} |")
    if before["direct"]["requests"] < 100:
        idle = before["idle"]
        lines.append(f"\nBefore, the picker completed {before['direct']['requests']} requests in the "
                     f"{before['direct']['seconds']} s of the direct phase: scraping with httpx took its core "
                     f"({idle['picker_cpu_ms_per_s']} ms CPU/s) and still managed {idle['scrapes_per_s']} of the "
                     f"{idle.get('scrapes_per_s_configured', '?')} scrapes/s it owes; per-request figures are "
                     "that CPU divided by a handful of requests.")
    return [*lines, ""]


def _headline(before: dict, after: dict) -> str:
    b, a = before["direct"], after["direct"]
    step_b, step_a = _best_step(before), _best_step(after)
    return (f"- **{after['endpoints']} endpoints**: the picker alone carried **{a['rps']} req/s on {a['picker_cores']} "
            f"of a core** ({a['picker_cpu_ms_per_req']} ms CPU/request, scraping included; before: {b['rps']} req/s, "
            f"{b['picker_cpu_ms_per_req']} ms). Through Envoy: picker {step_b.get('picker_cpu_ms_per_req', '–')} → "
            f"{step_a.get('picker_cpu_ms_per_req', '–')} ms CPU/request, Envoy {step_a.get('envoy_cpu_ms_per_req', '–')} ms. "
            f"Scraping: {before['idle']['picker_cpu_ms_per_scrape']} → {after['idle']['picker_cpu_ms_per_scrape']} ms "
            f"CPU per scrape. One core covers 1,000 req/s plus scraping with "
            f"{_cores_at_1000(after, a)} (picker alone) / {_cores_at_1000(after, step_a)} (through Envoy) of it.")


def _run_section(label: str, run: dict) -> list[str]:
    idle = run["idle"]
    lines = [
        f"### {label}: commit {run['commit']}, {run['date']}, {run['endpoints']} endpoints",
        "",
        f"{run['machine']}. `uptime` before: `{run['uptime_before']}`; after: `{run['uptime_after']}`.",
        "",
        (f"- Scraping (fixed cost): {idle['picker_cpu_ms_per_s']} ms CPU per second for "
         f"{idle['scrapes_per_s']} scrapes/s = {idle['picker_cpu_ms_per_scrape']} ms per scrape."),
    ]
    for key, how in (("direct", "raw HTTP/2 frames"), ("direct_grpcio", "grpcio client")):
        d = run.get(key)
        if d:
            lines.append(
                f"- Picker alone (the recorded conversation replayed, {how}, {d['requests']} requests, "
                f"{d['errors']} errors): {d['rps']} req/s, picker CPU {d['picker_cpu_ms_per_req']} ms/request "
                f"({d['picker_cpu_ms_per_req_net']} net of scraping, {d['picker_cores']} cores busy); the driver "
                f"{d.get('driver_cpu_ms_per_req', '?')} ms/request; routing latency p50 {d['routing_ms_p50']} ms, "
                f"p99 {d['routing_ms_p99']} ms; machine {d['machine_busy_pct']} % busy.")
    if run.get("handler"):
        lines.append(f"- Handler alone (in-process, no gRPC): {run['handler']['handler_cpu_ms_per_req']} ms CPU/request.")
    for s in run["scheduling"]:
        lines.append(f"- Scheduling ({s['endpoints']} endpoints, {s['prompt_chars']}-char system prompt, "
                     f"{s['requests']} calls, CPU time): p50 {s['schedule_ms_p50']} ms, p90 {s['schedule_ms_p90']} ms, "
                     f"p99 {s['schedule_ms_p99']} ms; body parse p50 {s['parse_ms_p50']} ms.")
    if run.get("gateway"):
        lines += ["", "Through Envoy (wrk, 64 connections, tiny chat completions, max_tokens 1):", "",
                  "| " + " | ".join(title for _, title in _GATEWAY_COLUMNS) + " |",
                  "|" + "---|" * len(_GATEWAY_COLUMNS)]
        for step in run["gateway"]:
            lines.append("| " + " | ".join(str(step.get(key, "")) for key, _ in _GATEWAY_COLUMNS) + " |")
    lines += ["", "ext_proc messages of one request, in order: " + ", ".join(f"`{m}`" for m in run["conversation"]) + ".",
              ""]
    return lines


def write_markdown(results: dict, path: Path) -> None:
    runs = results["runs"]
    lines = ["# Picker cost benchmark", "",
             ("`python bench/picker/run.py --label LABEL [--src TREE] [--endpoints N]`; bench/picker/run.py says what "
              "each phase measures. CPU time per request is the headline: the machine has 2 cores shared with other "
              "work, so wall-clock rates depend on what else runs; 1 ms of picker CPU per request = 1,000 req/s per core."),
             ""]
    notes_path = path.with_name("picker-notes.md")
    if notes_path.exists():
        lines += [notes_path.read_text().strip(), ""]
    pairs = [(runs[f"before-{label[6:]}"], runs[label], label[6:]) for label in runs
             if label.startswith("after-") and f"before-{label[6:]}" in runs]
    others = [(label, run) for label, run in runs.items()
              if label.startswith("after-") and f"before-{label[6:]}" not in runs]
    lines += ["## Headline", "", *(_headline(b, a) for b, a, _ in pairs)]
    for label, run in others:
        d = run["direct"]
        mode = "" if run.get("response_processing", True) else ", `response_processing: false`"
        lines.append(f"- {label} (commit {run['commit']}, {run['endpoints']} endpoints{mode}, load average "
                     f"{run['load_before'][0]} before): the picker alone carried {d['rps']} req/s on "
                     f"{d['picker_cores']} of a core ({d['picker_cpu_ms_per_req']} ms CPU/request, scraping included; "
                     f"{d['picker_cpu_ms_per_req_net']} net of scraping; the driver {d.get('driver_cpu_ms_per_req', '?')} ms, "
                     f"machine {d['machine_busy_pct']} % busy).")
    lines += ["", ("Per-request CPU rises on a busy machine (both cores were ~100 % busy with other work during most "
                   "runs: see the load averages); the before/after pairs ran minutes apart in one session."), "",
              "## Before / after", ""]
    for before, after, endpoints in pairs:
        lines += _comparison(before, after, endpoints)
    lines += ["## Runs", ""]
    for label, run in runs.items():
        lines += _run_section(label, run)
    path.write_text("\n".join(lines) + "\n")
