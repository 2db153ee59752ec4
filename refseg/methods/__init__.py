"""One module per paper: what each method adds to SAM 2 and how it plugs into the engine."""
