"""InferShield: a natively accelerated inference firewall for ML/LLM serving."""

from infershield.verdict import Decision, Status, Verdict

__all__ = ["Decision", "Status", "Verdict", "__version__"]
__version__ = "0.1.0"
