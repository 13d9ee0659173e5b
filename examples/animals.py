"""The fur/wings animal classifier of the course notes, written as the Keras original.

    python examples/animals.py

Each animal is [has fur, has wings]; the classes are other, mammal and bird.
Only the import line differs from Keras. The weights start tiny
(random_uniform in ±0.05) and plain SGD (lr 0.01) moves slowly, so, as in
Keras, some seeds end the 1000 epochs with the single mammal still
misclassified; the seed below is one that learns all six.
"""

import fastnn
from fastnn import Dense, Sequential

SEED = 6


def main(verbose: int = 0) -> Sequential:
    x, y, class_names = fastnn.datasets.animals()

    model = Sequential(seed=SEED)
    model.add(Dense(3, input_dim=2, activation="relu",
                    kernel_initializer="random_uniform", bias_initializer="zeros"))
    model.add(Dense(3, activation="softmax"))
    model.compile(optimizer="SGD", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=1000, verbose=verbose, seed=SEED)

    print(f"after 1000 epochs: loss {history.history['loss'][-1]:.4f}, "
          f"accuracy {history.history['accuracy'][-1]:.0%}")
    for features, probabilities in zip(x, model.predict(x)):
        fur, wings = (int(value) for value in features)
        print(f"fur={fur} wings={wings} -> {class_names[probabilities.argmax()]:<6} "
              f"(p = {probabilities.round(3)})")
    return model


if __name__ == "__main__":
    main()
