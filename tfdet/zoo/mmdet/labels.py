"""Class names and dataset category ids of converted mmdetection models."""

from tfdet.zoo.classes import COCO_CATEGORIES

COCO_CLASSES = tuple(COCO_CATEGORIES.values())  # COCO 2017's 80 categories in id order (mmdet CocoDataset's)
_COCO_IDS = {name: category_id for category_id, name in COCO_CATEGORIES.items()}


def category_ids(class_names, num_classes):
    """The dataset category id of each class: COCO's ids when the names are COCO's 80 (in the names' order),
    else 1..num_classes."""
    if class_names is not None and len(class_names) == len(COCO_CLASSES) and set(class_names) == set(COCO_CLASSES):
        return [_COCO_IDS[name] for name in class_names]
    return list(range(1, num_classes + 1))
