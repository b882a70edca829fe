"""Wire protocols: how a request's body becomes rows and a prediction becomes an answer.
``native`` is modelyard's own, ``mlflow`` MLflow's scoring API, ``v2`` the Open Inference Protocol;
each uses the same Predictor, auth, limits and metrics (the lane in ``serving.http``)."""
