"""Prediction clients of an exported detector, and its outputs as COCO results.

A predictor maps {input name: ndarray} to {output name: ndarray} through one signature; a request the
model rejects raises ValueError, a server that cannot be reached ConnectionError:
  LocalPredictor(path)                      a SavedModel folder, loaded in this process
  RestPredictor("http://host:8501", name)   TF Serving REST: POST /v1/models/<name>[/versions/<v>]:predict
  GrpcPredictor("host:8500", name)          TF Serving gRPC (needs the optional tensorflow-serving-api)
The signatures are those of tfdet.serving.module (outputs in original-image pixels, category ids);
tfdet.evaluation.results.serving_to_coco turns their outputs into COCO results.
"""

import base64
import json
import urllib.error
import urllib.request

import numpy as np


class LocalPredictor:
    def __init__(self, path, signature="serving_default"):
        import tensorflow as tf

        self._tf = tf
        self.loaded = tf.saved_model.load(path)
        if signature not in self.loaded.signatures:
            raise ValueError(f"SavedModel {path} has no signature {signature!r}; it has {sorted(self.loaded.signatures)}.")
        self.fn = self.loaded.signatures[signature]

    def __call__(self, inputs):
        return {k: v.numpy() for k, v in self.fn(**{k: self._tf.constant(v) for k, v in inputs.items()}).items()}


def _json_value(array):
    if array.dtype == object or array.dtype.kind == "S":
        return [{"b64": base64.b64encode(bytes(v)).decode("ascii")} for v in array.reshape(-1)]
    return array.tolist()


class RestPredictor:
    """TF Serving's REST predict API (columnar "inputs" format; bytes as {"b64": ...})."""

    def __init__(self, url, model_name, signature="serving_default", version=None, timeout=60.0):
        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            base = "http://" + base
        version_part = f"/versions/{int(version)}" if version is not None else ""
        self.endpoint = f"{base}/v1/models/{model_name}{version_part}:predict"
        self.signature, self.timeout = signature, timeout

    def __call__(self, inputs):
        body = json.dumps({"signature_name": self.signature,
                           "inputs": {k: _json_value(np.asarray(v)) for k, v in inputs.items()}}).encode()
        request = urllib.request.Request(self.endpoint, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise ValueError(f"{self.endpoint} rejected the request (HTTP {e.code}): {detail}") from None
        except urllib.error.URLError as e:
            raise ConnectionError(f"cannot reach {self.endpoint}: {e.reason}") from None
        outputs = reply.get("outputs")
        if not isinstance(outputs, dict):
            raise ValueError(f"{self.endpoint} answered without named 'outputs': {str(reply)[:300]}")
        return {k: np.asarray(v) for k, v in outputs.items()}


class GrpcPredictor:
    """TF Serving's gRPC PredictionService (pip install tensorflow-serving-api grpcio)."""

    def __init__(self, target, model_name, signature="serving_default", version=None, timeout=60.0):
        try:
            import grpc
            from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        except ImportError as e:
            raise ImportError(f"gRPC prediction needs the optional tensorflow-serving-api and grpcio packages "
                              f"(pip install tensorflow-serving-api grpcio), or use the REST endpoint: {e}") from None
        self._predict_pb2, self._grpc, self.target = predict_pb2, grpc, target
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
        self.model_name, self.signature, self.version, self.timeout = model_name, signature, version, timeout

    def __call__(self, inputs):
        import tensorflow as tf

        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature
        if self.version is not None:
            request.model_spec.version.value = int(self.version)
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
        try:
            response = self.stub.Predict(request, self.timeout)
        except self._grpc.RpcError as e:
            code = e.code()
            if code in (self._grpc.StatusCode.UNAVAILABLE, self._grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ConnectionError(f"cannot reach {self.target} ({code.name}): {e.details()}") from None
            raise ValueError(f"{self.target} rejected the request ({code.name}): {e.details()}") from None
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

