"""turbovaed: Turbo-VAED mobile video VAE decoders, from distillation to phones."""

__version__ = "0.1.0"
