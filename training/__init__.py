"""Fine-tuning and evaluation: the thesis' recipes on a user's own labelled faces (torch; not the runtime)."""
