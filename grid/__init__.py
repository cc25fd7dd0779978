"""hubcat grid package."""
