"""The ``patron`` command: the composition root above features, models, training, serving
and experiments."""
