"""The floor: a Flask route answering constant JSON, on the same stack (no model, no database)."""

from flask import Flask, Response

app = Flask(__name__)
_BODY = b'{"model":"iris","version":1,"predictions":[0],"labels":["setosa"],"target_value":0}'


@app.route("/predict", methods=["POST"])
def predict():
    return Response(_BODY, mimetype="application/json")
