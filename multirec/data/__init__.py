"""Data half of the pipeline: PixelRec reading, preparation, samples, the datamodule."""
