"""From CSV rows to batches: samples, raster reads, transforms, datasets and the datamodule."""
