"""Static HTML reports rendered from the results store."""
