"""Model zoo: reproducing torchvision and mmdetection detectors.

`synthetic` is numpy-only: the side environment loads it by file path (tools/zoo_reference/).
"""
