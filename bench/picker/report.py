"""bench/results/picker.md from picker.json: one section per run (before / after ...)."""

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


def _run_section(label: str, run: dict) -> list[str]:
    idle, direct = run["idle"], run["direct"]
    lines = [
        f"## {label}: commit {run['commit']}, {run['date']}",
        "",
        f"{run['machine']}; {run['endpoints']} endpoints. `uptime` before: `{run['uptime_before']}`; "
        f"after: `{run['uptime_after']}`.",
        "",
        (f"- **Scraping (fixed cost)**: {idle['picker_cpu_ms_per_s']} ms CPU per second for "
         f"{idle['scrapes_per_s']} scrapes/s = {idle['picker_cpu_ms_per_scrape']} ms per scrape."),
        f"- **Picker alone** (recorded Envoy conversation replayed over gRPC, {direct['requests']} requests, "
        f"{direct['errors']} errors): {direct['rps']} req/s, picker CPU **{direct['picker_cpu_ms_per_req']} ms/request** "
        f"({direct['picker_cpu_ms_per_req_net']} net of scraping, {direct['picker_cores']} cores busy), driver "
        f"{direct.get('driver_cpu_ms_per_req', '?')} ms/request, routing latency p50 {direct['routing_ms_p50']} ms / "
        f"p99 {direct['routing_ms_p99']} ms, machine {direct['machine_busy_pct']} % busy.",
    ]
    for s in run["scheduling"]:
        lines.append(f"- **Scheduling** ({s['endpoints']} endpoints, {s['prompt_chars']}-char system prompt, "
                     f"{s['requests']} calls, CPU time): p50 {s['schedule_ms_p50']} ms, p90 {s['schedule_ms_p90']} ms, "
                     f"p99 {s['schedule_ms_p99']} ms; body parse p50 {s['parse_ms_p50']} ms.")
    if run.get("gateway"):
        lines += ["", "Through Envoy (wrk, 64 connections, tiny chat completions, max_tokens 1):", "",
                  "| " + " | ".join(title for _, title in _GATEWAY_COLUMNS) + " |",
                  "|" + "---|" * len(_GATEWAY_COLUMNS)]
        for step in run["gateway"]:
            lines.append("| " + " | ".join(str(step.get(key, "")) for key, _ in _GATEWAY_COLUMNS) + " |")
    lines += ["", "ext_proc messages per request (as Envoy sent and the picker answered): "
              + ", ".join(f"`{m}`" for m in run["conversation"]) + ".", ""]
    return lines


def write_markdown(results: dict, path: Path) -> None:
    runs = results["runs"]
    lines = ["# Picker cost benchmark", "",
             "`python bench/picker/run.py --label LABEL [--src TREE]` (bench/picker/run.py says what each phase does). "
             "CPU time per request is the headline: the machine has 2 cores shared with other work, so wall-clock "
             "rates depend on what else runs; 1 ms of picker CPU per request = 1,000 req/s per core.", ""]
    if "before" in runs and "after" in runs:
        b, a = runs["before"], runs["after"]
        lines += ["| | before | after |", "|---|---|---|",
                  f"| picker alone, CPU ms/request | {b['direct']['picker_cpu_ms_per_req']} | {a['direct']['picker_cpu_ms_per_req']} |",
                  f"| picker alone, net of scraping | {b['direct']['picker_cpu_ms_per_req_net']} | {a['direct']['picker_cpu_ms_per_req_net']} |",
                  f"| picker alone, req/s | {b['direct']['rps']} | {a['direct']['rps']} |",
                  f"| scraping, picker CPU ms/s ({a['endpoints']} endpoints) | {b['idle']['picker_cpu_ms_per_s']} | {a['idle']['picker_cpu_ms_per_s']} |"]
        if b.get("gateway") and a.get("gateway"):
            bmax, amax = b["gateway"][-1], a["gateway"][-1]
            lines += [f"| through Envoy, unpaced, req/s | {bmax['rps']} | {amax['rps']} |",
                      f"| through Envoy, picker CPU ms/request | {bmax['picker_cpu_ms_per_req']} | {amax['picker_cpu_ms_per_req']} |",
                      f"| through Envoy, Envoy CPU ms/request | {bmax['envoy_cpu_ms_per_req']} | {amax['envoy_cpu_ms_per_req']} |"]
        lines.append("")
    for label, run in runs.items():
        lines += _run_section(label, run)
    path.write_text("\n".join(lines) + "\n")
