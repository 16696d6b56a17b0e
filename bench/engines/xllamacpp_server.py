"""Run llama.cpp's HTTP server in-process through xllamacpp (for bench/engines/run.py; runs in its own venv).

    python xllamacpp_server.py --model X.gguf --port P [--parallel 16] [--ctx-per-slot 2048] [--threads 2]
"""

import argparse
import os
import signal
import threading

import xllamacpp as xlc


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--parallel", type=int, default=16)
    p.add_argument("--ctx-per-slot", type=int, default=2048)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--alias", default="SmolLM2-135M-Instruct")
    a = p.parse_args()

    params = xlc.CommonParams()
    params.model.path = a.model
    params.model_alias = {a.alias}
    params.n_parallel = a.parallel
    params.n_ctx = a.ctx_per_slot * a.parallel
    params.cont_batching = True
    params.endpoint_metrics = True
    params.use_jinja = True
    params.cpuparams.n_threads = a.threads
    params.cpuparams_batch.n_threads = a.threads
    params.port = a.port
    server = xlc.Server(params)
    print("xllamacpp listening on", server.listening_address, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
