"""Batch normalization rescues a deep sigmoid network (vanishing gradients).

    python examples/batchnorm_sigmoid.py

The course notes explain why deep sigmoid networks stall: sigmoid'(z) is at most 1/4, so
the gradient that reaches the first layers shrinks by a factor of 4 or more per layer, and
those layers barely learn. Batch normalization keeps every layer's pre-activations centred
with unit variance, where the sigmoid is steepest, and the same network trains.

Two networks of DEPTH sigmoid layers on the digits, trained alike (plain SGD):
    Dense(32, sigmoid) x DEPTH                                  -> stalls
    [Dense(32, use_bias=False), BatchNormalization(), Activation("sigmoid")] x DEPTH -> trains
"""

from fastnn import SGD, Activation, BatchNormalization, Dense, Sequential
from fastnn.datasets import load_digits, train_test_split

DEPTH = 8
WIDTH = 32


def deep_sigmoid(batch_norm: bool) -> Sequential:
    layers = []
    for _ in range(DEPTH):
        if batch_norm:
            layers += [Dense(WIDTH, use_bias=False), BatchNormalization(),
                       Activation("sigmoid")]
        else:
            layers.append(Dense(WIDTH, "sigmoid"))
    return Sequential(layers + [Dense(10, "softmax")], seed=0)


def main(epochs: int = 20, verbose: int = 0):
    x, y = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=0.2, seed=0)
    results = {}
    for batch_norm in (False, True):
        name = "with batch norm" if batch_norm else "without batch norm"
        model = deep_sigmoid(batch_norm)
        model.compile(SGD(lr=0.1), "sparse_categorical_crossentropy", metrics=["accuracy"])
        history = model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=verbose,
                            seed=0)
        _, accuracy = model.evaluate(x_test, y_test)
        curve = " ".join(f"{a:.2f}" for a in history.history["accuracy"][::4])
        print(f"{name:>20}: training accuracy every 4 epochs {curve}; "
              f"final test accuracy {accuracy:.2%}")
        results[batch_norm] = accuracy
    return results[False], results[True]


if __name__ == "__main__":
    main()
