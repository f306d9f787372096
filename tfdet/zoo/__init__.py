"""Model zoo: reproducing torchvision and mmdetection detectors (issue #17).

`synthetic` is numpy-only: the side environment loads it by file path (tools/zoo_reference/).
"""
