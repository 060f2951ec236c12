"""LSTM keyword model: training, compression, exact size and the Ray Tune search."""
