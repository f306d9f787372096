"""Shared fixtures of the engine tests: the tiny shapes split of tests/engine/tiny_config.py."""

import pytest

from tests.engine import tiny_config
from tfdet.data import shapes


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("engine_shapes") / "shapes")
    shapes.ensure_shapes(root, **tiny_config.SHAPES)
    return root


@pytest.fixture
def tiny(shapes_dir):
    """The tiny config with its data under the session's shapes folder."""
    def make(arg=None):
        config = tiny_config.get_config(arg)
        config.data.root = shapes_dir
        return config
    return make
