"""A trained model without the training stack: its files read, its exported ONNX graph run, served over HTTP.

Nothing here imports Lightning (nor torch, but to read a ``.pt`` file), so a deployed model starts in
under a second. The data modules read their files with ``inputs`` too, so training and a deployed
model see the same numbers.
"""
