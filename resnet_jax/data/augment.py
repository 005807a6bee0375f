"""The paper's augmentation, jittable and run on device: 4-pixel zero pad, random crop, random h-flip."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pad_crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """Per image: zero-pad by `pad`, crop back to the original size at a random offset, flip with p=0.5."""
    n, h, w, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(image: jax.Array, offset: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    cropped = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(flip_key, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, cropped[:, :, ::-1, :], cropped)
