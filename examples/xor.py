"""XOR: a network with one hidden layer learns it; a single linear layer cannot.

    python examples/xor.py

XOR's classes are not linearly separable: no line puts (0,1) and (1,0) on one
side and (0,0) and (1,1) on the other. The best a softmax over x @ w + b can
do is answer 1/2 for every point (loss ln 2 = 0.693), and it never gets all
four right. Eight tanh units bend the space enough to get all four.
"""

import fastnn
from fastnn import SGD, Dense, Sequential


def train(hidden_units: int, seed: int = 0) -> Sequential:
    """A 2-[hidden]-2 softmax classifier trained on the XOR table (no hidden layer if 0)."""
    x, y = fastnn.datasets.xor()
    layers = [Dense(hidden_units, "tanh", input_dim=2)] if hidden_units else []
    model = Sequential(layers + [Dense(2, "softmax", input_dim=None if layers else 2)],
                       seed=seed)
    model.compile(SGD(lr=0.5, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=500, batch_size=None, verbose=0, seed=seed)
    return model


def main():
    x, y = fastnn.datasets.xor()
    results = {}
    for hidden_units, name in ((0, "one linear layer"), (8, "2-8-2 network (tanh)")):
        model = train(hidden_units)
        loss, accuracy = model.evaluate(x, y)
        results[hidden_units] = (model.predict_classes(x), accuracy)
        print(f"{name:<22} predicts {model.predict_classes(x)} for {y}: "
              f"accuracy {accuracy:.0%}, loss {loss:.4f}")
    return results


if __name__ == "__main__":
    main()
