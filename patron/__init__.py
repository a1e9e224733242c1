"""The ``patron`` command (composition root above features, models, training, serving and experiments)."""
