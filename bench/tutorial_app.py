"""The tutorial's app, kept as the benchmark baseline: Flask, a DataFrame per request, jsonify.

Faithful to the classic tutorial (train an Iris SVC(kernel='linear'), pickle it, expose predict
via POST /predict with a JSON dict of features), with the model trained at import instead of read
from a pickle file.
"""

import pandas as pd
from flask import Flask, jsonify, request
from sklearn.datasets import load_iris
from sklearn.svm import SVC

iris = load_iris()
clf = SVC(kernel="linear").fit(iris.data, iris.target)

app = Flask(__name__)


@app.route("/predict", methods=["POST"])
def predict():
    json_ = request.json
    query_df = pd.DataFrame(json_, index=[0])
    prediction = clf.predict(query_df.values)
    return jsonify({"target_value": int(prediction[0])})


@app.route("/predict-dataframe", methods=["POST"])
def predict_dataframe():
    """The same with the DataFrame itself handed to predict, the other reading of the tutorial:
    scikit-learn then checks the frame's columns on every call, and warns on every call (the
    model was fitted without feature names)."""
    query_df = pd.DataFrame(request.json, index=[0])
    prediction = clf.predict(query_df)
    return jsonify({"target_value": int(prediction[0])})
