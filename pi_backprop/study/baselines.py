"""Classical baselines on the raw pixels (scikit-learn): what a network must beat.

Each is fitted on the same drawn images the networks train on, flattened to vectors of
C·H·W pixels in [0, 1] (the camera path's output, no scaling or features), with
scikit-learn's defaults except where said:

    1nn     1-nearest-neighbour, Euclidean distance
    svm     SVC, RBF kernel, C = 1, gamma = "scale" (1 / (pixels · variance of the pixels))
    logreg  multinomial logistic regression, L2, C = 1, lbfgs; max_iter 5000 instead of 100,
            so that it converges rather than warns
"""

import numpy as np

from .digits import sklearn_module

BASELINES = {
    "1nn": "1-nearest-neighbour",
    "svm": "RBF SVM (C=1, gamma=scale)",
    "logreg": "logistic regression (C=1)",
}


def _classifier(name: str):
    if name == "1nn":
        return sklearn_module("neighbors").KNeighborsClassifier(n_neighbors=1)
    if name == "svm":
        return sklearn_module("svm").SVC(kernel="rbf", C=1.0, gamma="scale")
    return sklearn_module("linear_model").LogisticRegression(C=1.0, max_iter=5000)


def accuracies(name: str, x_train: np.ndarray, y_train: np.ndarray, tests) -> list:
    """Fit baseline ``name`` on (x_train, y_train); its accuracy in [0, 1] on each (x, y) of
    ``tests``.

    x_train and each x : float (N, ...) images, flattened here; y_train and each y : int (N,).
    """
    classifier = _classifier(name)
    classifier.fit(x_train.reshape(len(x_train), -1), y_train)
    return [float(np.mean(classifier.predict(x.reshape(len(x), -1)) == y)) for x, y in tests]
