"""Shap-E through diffusers (model.py: the protocol; field.py: the differentiable field query)."""
