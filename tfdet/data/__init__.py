"""Data: COCO reader (`coco`, with the json checks of `coco_checks` and the image-file checks of
`image_files`; what it drops or repairs is counted in a `report`), synthetic shapes dataset (`shapes`),
augmentation (`augment`), TFRecord conversion (`tfrecords`), the tf.data input pipeline (`pipeline`) and
the training input of a config's `data` block (`train_input`)."""
