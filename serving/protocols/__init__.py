"""Wire protocols: how a request's body becomes rows and a prediction becomes an answer.
``native`` is modelyard's own; each protocol uses the same Predictor, auth, limits and metrics."""
