"""ARC self-edits: the prompt the model answers, the schema and parser of its answer, and the recipe it maps to."""
