"""Model building blocks: backbones, necks, heads and detectors."""
