"""Segments to images: the cut, filtered, padded log-mel images and the dataset folder that holds them."""
