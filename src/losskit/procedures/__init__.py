"""Training recipes that own models and loops (progressive distillation, active distillation,
co-teaching, self-training, ...)."""
