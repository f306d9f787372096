"""Config of the engine tests (bin/train.py --config=tests/engine/tiny_config.py[:arg]): TinyRPN on a tiny
shapes split. `arg` "nan" injects a NaN loss at step 3, "sampled" samples 16 anchors per image at random
(TFDET_TEST_SHAPES_DIR names the data folder)."""

import os

import ml_collections

SHAPES = dict(num_train=8, num_val=2, min_image_size=96, max_image_size=128, max_shapes=3, min_shape_size=16,
              max_shape_size=40)


def get_config(arg=None):
    if arg not in (None, "", "nan", "sampled"):
        raise ValueError(f"tiny_config: unknown variant {arg!r}; known: 'nan', 'sampled'.")
    model = dict(type="tests.engine.tiny_rpn:TinyRPN", width=8)
    if arg == "nan":
        model["inject_nan_at_step"] = 3
    if arg == "sampled":
        model["num_samples"] = 16
    return ml_collections.ConfigDict(dict(
        model=model,
        data=dict(source="shapes", root=os.environ.get("TFDET_TEST_SHAPES_DIR"), shapes=SHAPES, scale=(128, 96),
                  max_instances=4, mask_size=0, with_keypoints=False, flip_prob=0.5, shuffle_buffer=16),
        train=dict(batch_size=2, base_lr=0.01, momentum=0.9, weight_decay=1e-4, warmup_steps=2, warmup_ratio=0.1,
                   total_steps=6, steps_per_epoch=4, decay_steps=(4,), checkpoint_every=2, keep_checkpoints=10,
                   log_every=1, seed=0)))
