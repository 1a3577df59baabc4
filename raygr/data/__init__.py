"""Data: input formats, the synthetic default, the prepared-dataset format, splits and batches."""
