"""Shared fixtures for the evaluation tests: a tiny shapes dataset (boxes, polygons, 5 keypoints)."""

import pytest

from tests.data.coco_files import TINY_SHAPES
from tfdet.data import coco, shapes


@pytest.fixture(scope="session")
def shapes_val(tmp_path_factory):
    split = shapes.ensure_shapes(str(tmp_path_factory.mktemp("shapes") / "shapes"), **TINY_SHAPES)["val"]
    return split


@pytest.fixture(scope="session")
def reader(shapes_val):
    return coco.CocoReader(shapes_val.ann_file, shapes_val.image_dir)
