"""Python reference for the scoring part of examples/bench_models.rs: CLIP-S with an
open_clip model of the same shape as dicoflow's `ClipConfig::tiny`, 256 random images
x 5 captions, each image encoded once, texts prefixed "A photo depicts ".

    python examples/bench_models_python.py
"""
import time

import numpy as np
import open_clip
import torch
from open_clip.model import CLIP

model = CLIP(
    embed_dim=64,
    vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=16, mlp_ratio=4.0),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=4, layers=2, mlp_ratio=4.0),
    quick_gelu=True,
).eval()
tokenizer = open_clip.get_tokenizer("ViT-B-32")
words = ["red", "blue", "circle", "square", "left", "of", "a", "big", "small", "green"]
n_images, per_image = 256, 5
images = torch.randn(n_images, 3, 32, 32)
captions, owners = [], []
for i in range(n_images):
    for j in range(per_image):
        captions.append(" ".join(words[(i * 7 + j * 3 + w * 5) % len(words)] for w in range(8)))
        owners.append(i)


def score():
    with torch.no_grad():
        img = model.encode_image(images).numpy()
        txt = []
        for b in range(0, len(captions), 256):
            ids = tokenizer(["A photo depicts " + c for c in captions[b : b + 256]])
            txt.append(model.encode_text(ids).numpy())
        txt = np.vstack(txt)
    img = img / np.sqrt((img**2).sum(1, keepdims=True))
    txt = txt / np.sqrt((txt**2).sum(1, keepdims=True))
    return 2.5 * np.clip((img[owners] * txt).sum(1), 0, None)


print(f"torch threads: {torch.get_num_threads()}")
score()
reps = 3
start = time.perf_counter()
for _ in range(reps):
    score()
secs = (time.perf_counter() - start) / reps
print(f"CLIP-S tiny open_clip, {n_images} images x {per_image} captions: {len(captions) / secs:.0f} pairs/s")
