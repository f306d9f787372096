"""Input pipeline throughput: COCO json + images (masks decoded by pycocotools) vs sharded TFRecords
(PNG masks decoded by TF), training mode at the (1333, 800) scale with flips and 112 x 112 mask crops.

    python -m benchmarks.data_pipeline_bench            # 48 COCO-sized (480-640 px) shapes images
    python -m benchmarks.data_pipeline_bench --quick    # 16 images, fewer batches

Both pipelines run in this one process on the same data, so their ratio is what to read.
"""

import argparse
import itertools
import tempfile

from benchmarks.common import print_table, time_call
from tfdet.data import coco, pipeline, shapes, tfrecords


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    num_images, batches = (16, 4) if args.quick else (48, 12)
    with tempfile.TemporaryDirectory() as tmp:
        split = shapes.ensure_shapes(f"{tmp}/shapes", num_train=num_images, num_val=1, min_image_size=480,
                                     max_image_size=640, max_shapes=8, min_shape_size=40, max_shape_size=200,
                                     image_format="jpg")["train"]
        reader = coco.CocoReader(split.ann_file, split.image_dir, semantic_dir=split.semantic_dir)
        tfrecords.write_tfrecords(reader, f"{tmp}/records/train", num_shards=4)
        options = pipeline.InputOptions(batch_size=2, scale=(1333, 800), mask_size=112, max_instances=100,
                                        with_semantic=True, shuffle_buffer=num_images)
        rows = []
        for name, ds in (("json + pycocotools", pipeline.from_coco(reader, options)),
                         ("tfrecords", pipeline.from_tfrecords(f"{tmp}/records/train", options))):
            it = iter(ds)
            seconds = time_call(lambda: list(itertools.islice(it, batches)), warmup=1, repeats=3)
            rows.append([name, f"{batches * options.batch_size / seconds:.1f}"])
        base = float(rows[0][1])
        for row in rows:
            row.append(f"{float(row[1]) / base:.2f}")
        print(f"{num_images} images 480-640 px (JPEG), up to 8 instances, batch 2 at (1333, 800) padded to 1344^2")
        print_table(["source", "images/s", "ratio"], rows)


if __name__ == "__main__":
    main()
