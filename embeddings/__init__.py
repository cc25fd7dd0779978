"""hubcat embeddings package."""
