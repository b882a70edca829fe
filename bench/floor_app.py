"""The floors: constant JSON with no model and no database, on the same servers as modelyard.

``app`` is a Flask route (the floor of a Flask app); ``wsgi`` is a plain WSGI callable (the floor
of any Python answer under a given server).
"""

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response

app = Flask(__name__)
_BODY = b'{"model":"iris","version":1,"predictions":[0],"labels":["setosa"],"target_value":0}'
_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(_BODY)))]


@app.route("/predict", methods=["POST"])
def predict() -> Response:
    return Response(_BODY, mimetype="application/json")


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", _HEADERS)
    return [_BODY]
