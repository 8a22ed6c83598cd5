"""Mesh-TF layers (each a `TransformerLayer` with `call(context, x)`), usable from Gin."""
