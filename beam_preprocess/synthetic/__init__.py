"""Synthetic handwriting rendered from CJK fonts into real CASIA files (`hccr-synth`): the
embedded default dataset, and synthetic writers as a training ingredient.
"""
