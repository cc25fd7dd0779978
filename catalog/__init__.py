"""hubcat catalog package."""
