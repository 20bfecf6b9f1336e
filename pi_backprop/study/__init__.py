"""Studies: reproducible measurements of how well the product learns, run from ``scripts/``.

Nothing on the device imports this package. It drives the public library (model
definitions, the trainer, the camera preprocessing) exactly as ``pi-backprop train`` does,
and borrows the benchmark's PyTorch twin, so it sits above the command line.

    small_data  the few-shot study of issue 14 (``scripts/small-data``): digits enlarged as the
                camera would, k labelled samples per class, our recipes, their PyTorch twins
                and classical baselines
    digits      the data: scikit-learn's digits through the camera pipeline, hold-out and draws
    recipes     the registry of recipes (model definition + training settings + augmentation)
                and how one is trained through ``training.trainer.Trainer``
    torch_twin  the same recipe in PyTorch: same samples, initial weights and batch order
    baselines   1-nearest-neighbour, RBF SVM and logistic regression (scikit-learn)

scikit-learn (the ``study`` extra) and torch (the ``bench`` extra) are imported only when used.
"""
