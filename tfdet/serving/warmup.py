"""TF Serving warm-up requests (`assets.extra/tf_serving_warmup_requests`) without tensorflow-serving-api.

The file is a TFRecord of serialized `tensorflow.serving.PredictionLog` messages. Their wire format is
written here by hand (proto3 field numbers of tensorflow_serving/apis, stable since 2018):
  PredictionLog  { PredictLog predict_log = 6; }
  PredictLog     { PredictRequest request = 1; }
  PredictRequest { ModelSpec model_spec = 1; map<string, TensorProto> inputs = 2; }
  ModelSpec      { string name = 1; string signature_name = 3; }
A map entry is a nested message { string key = 1; TensorProto value = 2; }; TensorProto bytes come
from TensorFlow's own `tf.make_tensor_proto`. `parse_prediction_log` reads them back (for tests and
for checking a file).
"""

import os

import tensorflow as tf

WARMUP_FILE = "tf_serving_warmup_requests"


def _varint(value):
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, payload):
    """A length-delimited (wire type 2) field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def predict_request(inputs, model_name, signature_name):
    """Serialized PredictRequest with `inputs` {name: array} as TensorProtos."""
    spec = _field(1, model_name.encode()) + _field(3, signature_name.encode())
    body = _field(1, spec)
    for key in sorted(inputs):
        tensor = tf.make_tensor_proto(inputs[key]).SerializeToString()
        body += _field(2, _field(1, key.encode()) + _field(2, tensor))
    return body


def prediction_log(inputs, model_name, signature_name):
    """Serialized PredictionLog holding one PredictLog with the request."""
    return _field(6, _field(1, predict_request(inputs, model_name, signature_name)))


def write_warmup_file(path, requests, model_name="tfdet"):
    """Writes [(signature name, {input name: array})] as a TFRecord of PredictionLogs."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, inputs in requests:
            writer.write(prediction_log(inputs, model_name, signature_name))


def _fields(data):
    """[(field number, wire type, value)] of one message (varints and length-delimited fields only)."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        else:
            raise ValueError(f"unexpected wire type {wire} for field {number}.")
        out.append((number, wire, value))
    return out


def _read_varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def parse_prediction_log(data):
    """(model name, signature name, {input name: ndarray}) of a serialized PredictionLog."""
    [(_, _, predict_log)] = [f for f in _fields(data) if f[0] == 6]
    [(_, _, request)] = [f for f in _fields(predict_log) if f[0] == 1]
    name = signature = None
    inputs = {}
    for number, _, value in _fields(request):
        if number == 1:
            spec = {n: v.decode() for n, _, v in _fields(value)}
            name, signature = spec.get(1), spec.get(3)
        elif number == 2:
            entry = dict((n, v) for n, _, v in _fields(value))
            proto = tf.make_tensor_proto(0)
            proto.ParseFromString(entry[2])
            inputs[entry[1].decode()] = tf.make_ndarray(proto)
    return name, signature, inputs
