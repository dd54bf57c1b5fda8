"""Image features: local key points (OpenCV), HOG, visual vocabularies, BoVW aggregation."""
