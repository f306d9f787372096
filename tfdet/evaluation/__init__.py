"""Evaluation: COCO results from padded detector outputs, COCO AP / proposal AR tables, test-time
augmentation, visualization and the evaluation driver behind `bin/evaluate.py`."""
