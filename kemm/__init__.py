"""kemm: knowledge-enhanced multimodal cancer survival prediction."""
__version__ = "0.1.0"
