"""Training steered by Keras callbacks: early stopping, a learning rate that falls on a
plateau, the best model kept on disk, a CSV log and a picture of the curves.

    python examples/callbacks.py [folder]

Digits (UCI, 8x8) with a validation split; every callback takes Keras' names and
arguments, so this reads as the Keras original would.
"""

import os
import sys
import tempfile

import fastnn
from fastnn import SGD, Dense, Sequential
from fastnn.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau
from fastnn.datasets import load_digits, train_test_split


def main(folder: str, epochs: int = 60, verbose: int = 1):
    x, y = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_fraction=0.2, seed=0)
    model = Sequential([Dense(64, "relu"), Dense(10, "softmax")], seed=0)
    model.compile(SGD(lr=0.05, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
    best = os.path.join(folder, "best.npz")
    history = model.fit(
        x_train, y_train, epochs=epochs, validation_split=0.2, verbose=verbose, seed=0,
        callbacks=[EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
                   ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2),
                   ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True),
                   CSVLogger(os.path.join(folder, "training.csv"))])
    print(f"trained {len(history.epoch)} of {epochs} epochs; learning rate now "
          f"{model.optimizer.learning_rate:g}")
    loss, accuracy, top5 = model.evaluate(x_test, y_test)
    print(f"test accuracy {accuracy:.2%} (top 5: {top5:.2%}), test loss {loss:.4f}")
    restored = fastnn.load_model(best)
    print(f"best checkpoint (by val_accuracy): test accuracy "
          f"{restored.evaluate(x_test, y_test)[1]:.2%}")
    try:
        history.plot(os.path.join(folder, "curves.png"))
        print(f"curves drawn in {os.path.join(folder, 'curves.png')}")
    except ImportError as exc:
        print(exc)
    return history, accuracy


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as directory:
            main(directory)
