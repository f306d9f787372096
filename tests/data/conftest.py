"""Shared fixtures for the data tests: a tiny shapes dataset."""

import pytest

from tests.data.coco_files import TINY_SHAPES
from tfdet.data import shapes


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory):
    return shapes.ensure_shapes(str(tmp_path_factory.mktemp("shapes") / "shapes"), **TINY_SHAPES)
