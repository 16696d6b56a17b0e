"""Open Inference Protocol (KServe v2 / Triton) model server for classic and embedding models.

A model repository (``repo/MODEL/config.yaml`` + ``repo/MODEL/VERSION/...``) is served over v2 REST,
v2 gRPC and OpenAI ``/v1/embeddings``; each model version has its own dynamic batcher.
"""
