"""Which op types does a SavedModel use, and are they all stock TensorFlow ops?

Self-contained (imports only TensorFlow) so that it runs as a script in a process where tfdet is
absent, which is where "stock" means something: our Tfdet> ops are registered only once tfdet's op
library is loaded.

    python tfdet/serving/graph_ops.py export/1        # prints {"ops": [...], "unregistered": [...]}
"""

import json
import os
import sys


def saved_model_op_types(path):
    """Sorted op types of every node of a SavedModel: the graphs of all its MetaGraphs and every
    function of their function libraries (calls of library functions by name are not op types)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops = set()
    for meta in proto.meta_graphs:
        library = meta.graph_def.library
        functions = {fn.signature.name for fn in library.function}
        ops.update(node.op for node in meta.graph_def.node)
        for fn in library.function:
            ops.update(node.op for node in fn.node_def)
        ops -= functions
    return sorted(ops)


def unregistered_ops(op_types):
    """The op types that the running TensorFlow process does not know."""
    from tensorflow.python.framework import op_def_registry

    return sorted(op for op in op_types if op_def_registry.get(op) is None)


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} SAVED_MODEL_DIR")
    ops = saved_model_op_types(argv[1])
    print(json.dumps({"ops": ops, "unregistered": unregistered_ops(ops)}))


if __name__ == "__main__":
    main(sys.argv)
