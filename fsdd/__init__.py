"""Free Spoken Digit Dataset: download, read, features, splits and batches."""
