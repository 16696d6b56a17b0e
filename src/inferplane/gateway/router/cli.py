"""``inferplane router``: the body-based router between several pools (started by ``inferplane up``)."""

from __future__ import annotations

import argparse

from inferplane.configfile import load_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "router",
        help="route requests to one of several pools by the model they name (Envoy ext_proc)",
        description="The body-based router: reads the model from the JSON body, the KServe v2 path or the gRPC "
                    "message and sends the request to the pool serving it.",
    )
    parser.add_argument("--config", required=True, help="YAML file; its 'router' section is read")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inferplane.gateway.router.config import RouterConfig
    from inferplane.gateway.router.server import serve

    return serve(load_model(RouterConfig, args.config, "router"))
