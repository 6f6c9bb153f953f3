"""Distillation of Turbo-VAED students from frozen teachers."""
