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
