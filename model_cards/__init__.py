"""Model card templates, installed as ``diffusers_mrs.model_cards``."""
