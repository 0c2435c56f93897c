"""The pieces train.py and test.py are built from, above data/, model/ and metrics/ (imports point down:
utils <- data / model / metrics <- engine <- train.py / test.py).

``evaluator``: the scoring loop of test.py and of validation (network input -> saved-style uint8 ->
the metric table's scores); ``validation``: validation and sample grids during training;
``loss_window``: the training loss terms and the non-finite check, kept on the device between reads.
Checkpoint and resume live beside the checkpoint format, in ``utils.resume``.
"""
