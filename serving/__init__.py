"""Serving: the route table (``routes``), the wire protocols (``protocols/``: native, MLflow's,
the Open Inference Protocol's, whose other routes are ``v2_api``), the Predictor
(``service``) with its decoder, fast path, micro-batching and estimator cache, and the WSGI lane
(``http``) that answers predicts in front of Flask. Installed as ``modelyard.serving``."""
