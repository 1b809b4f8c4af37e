"""latkit run: the pipeline's stages, its runner and its report."""
