"""Knowledge incorporation from passages (seal-reference §B): data, self-edit prompts, splitting, the domain."""
