"""Data: COCO reader (`coco`), synthetic shapes dataset (`shapes`), augmentation (`augment`),
TFRecord conversion (`tfrecords`) and the tf.data input pipeline (`pipeline`)."""
