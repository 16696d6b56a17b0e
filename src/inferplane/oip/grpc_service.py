"""The KServe v2 gRPC API (``inference.GRPCInferenceService``) on grpc.aio, sharing the REST server's models."""

from __future__ import annotations

import logging

import grpc
import numpy as np

from inferplane import __version__
from inferplane.oip.errors import BadRequest, InferError, LoadError
from inferplane.oip.proto import grpc_predict_v2_pb2 as pb
from inferplane.oip.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from inferplane.oip.state import ServerState
from inferplane.oip.tensors import NUMPY_OF, datatype_of, from_raw, to_raw

log = logging.getLogger("inferplane.oip")
EXTENSIONS = ["binary_tensor_data", "model_repository", "schedule_policy"]

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _param(params, name: str) -> int:
    if name not in params:
        return 0
    p = params[name]
    kind = p.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param") or getattr(p, kind) < 0:
        raise BadRequest(f"parameter '{name}' must be a non-negative integer")
    return int(getattr(p, kind))


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """Numpy inputs from raw contents (when present) or typed contents."""
    inputs: dict[str, np.ndarray] = {}
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest("raw_input_contents must hold one entry per input")
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if tensor.datatype not in NUMPY_OF:
            raise BadRequest(f"input '{tensor.name}': unknown datatype '{tensor.datatype}'")
        if raw:
            inputs[tensor.name] = from_raw(tensor.name, tensor.datatype, shape, raw[i])
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise BadRequest(f"input '{tensor.name}': {tensor.datatype} needs raw_input_contents")
        values = list(getattr(tensor.contents, field))
        count = int(np.prod(shape)) if shape else 1
        if len(values) != count:
            raise BadRequest(f"input '{tensor.name}': {len(values)} values do not fill shape {shape}")
        if tensor.datatype == "BYTES":
            array = np.empty(count, dtype=object)
            array[:] = values
        else:
            array = np.asarray(values, dtype=NUMPY_OF[tensor.datatype])
        inputs[tensor.name] = array.reshape(shape)
    return inputs


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Every RPC maps InferErrors to their gRPC status; nothing else escapes as a traceback."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, InferError):
            await context.abort(exc.grpc_code, str(exc))
        if isinstance(exc, LoadError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.exception("unexpected gRPC error")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.state.ready())

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.state.model_ready(request.name, request.version or None))

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="inferplane", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request, context):
        try:
            meta = self.state.metadata(self.state.repository.get(request.name, request.version or None))
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request, context):
        try:
            model = self.state.repository.get(request.model_name, request.model_version or None)
            inputs = decode_inputs(request)
            outputs = [o.name for o in request.outputs] or None
            result = await model.infer(inputs, outputs, _param(request.parameters, "priority"), _param(request.parameters, "timeout"))
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name, array in result.items():
            response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(to_raw(array))
        return response

    async def RepositoryIndex(self, request, context):
        rows = self.state.repository.index()
        if request.ready:
            rows = [r for r in rows if r["state"] == "READY"]
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**r) for r in rows])

    async def RepositoryModelLoad(self, request, context):
        try:
            await self.state.repository.load(request.model_name)
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        try:
            await self.state.repository.unload(request.model_name)
        except Exception as exc:  # noqa: BLE001
            await self._abort(context, exc)
        return pb.RepositoryModelUnloadResponse()


async def start_grpc_server(state: ServerState, host: str, port: int) -> grpc.aio.Server:
    """Start the gRPC server on the running loop; returns it (the bound port is ``state.grpc_port``)."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    state.grpc_port = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server
