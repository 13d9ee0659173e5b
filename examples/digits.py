"""Handwritten digits (UCI, 8x8 pixels): an MLP with dropout, validation and a saved model.

    python examples/digits.py

The same data as ``fastnn train``, written out with the layer API: a held-out
validation split watched each epoch, then the test accuracy, a save and a
reload that predicts the same.
"""

import os
import tempfile

import numpy as np

import fastnn
from fastnn import SGD, Dense, Dropout, Sequential
from fastnn.datasets import load_digits, train_test_split


def main(epochs: int = 30, verbose: int = 1):
    x, y = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=0.2, seed=0)

    model = Sequential([Dense(128, "relu", kernel_initializer="he_uniform"),
                        Dropout(0.2),
                        Dense(64, "relu", kernel_initializer="he_uniform"),
                        Dense(10, "softmax")], seed=0)
    model.compile(SGD(lr=0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, validation_split=0.1,
              verbose=verbose, seed=0)
    model.summary()

    loss, accuracy = model.evaluate(x_test, y_test)
    print(f"test accuracy {accuracy:.2%}, test loss {loss:.4f}")

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "digits.npz")
        model.save(path)
        restored = fastnn.load_model(path)
        assert np.array_equal(restored.predict(x_test), model.predict(x_test))
        print(f"saved to and reloaded from {os.path.basename(path)}: same predictions")
    return accuracy


if __name__ == "__main__":
    main()
