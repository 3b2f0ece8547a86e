"""Jobs belong to whoever started them: a fal queue request, an inference.sh task."""
