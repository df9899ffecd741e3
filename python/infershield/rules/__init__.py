"""Rules: the shipped YAML rule packs and the code that loads, compiles and runs them.

- :mod:`.packs`: the pack format, its validation and loading (``load_packs``);
- :mod:`.engine`: the Hyperscan signature engine over loaded rules;
- :mod:`.spans`, :mod:`.validators`, :mod:`.width`: span rules (PII, secrets) and their
  Python-side validators;
- :mod:`.cli`: ``infershield rules check|list``.
"""
