"""Text sources and vocabularies that need no download."""
