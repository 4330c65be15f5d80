"""Sampling one clip: the pipeline (encode, prepare latents, denoise, decode), classifier-free
guidance (sequential, batched or CFG-parallel), the flow-matching schedules and the conditioning
encoders (umT5 prompt, CLIP image, VAE latents, I2V mask).

May import: ``longvie.models``, ``longvie.weights``, ``longvie.media``, ``longvie.acceleration``.
"""
