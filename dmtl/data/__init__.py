"""Data on disk (TFRecord shards) and the tf.data input pipeline."""
