"""LongVie 2: controllable ultra-long video generation on Wan2.1-I2V (diffusers)."""
__version__ = "0.1.0"
