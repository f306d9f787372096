"""The .keras round trip every layer and model test makes."""

import keras
import numpy as np


def assert_round_trip(model, inputs, tmp_path, rtol=1e-5, atol=1e-6):
    """Saves `model` to a .keras file, loads it back and asserts the same outputs on `inputs`.

    Outputs are compared leaf by leaf (dict outputs come back with str keys, which sort like the int
    levels they were). Returns the loaded model for further checks.
    """
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    want, got = keras.tree.flatten(model(inputs)), keras.tree.flatten(loaded(inputs))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
    return loaded
