"""Why the demo's evaluator cannot tell left from right, and what would fix it.

A study in PyTorch, outside dicoflow, on a demo run's synthetic world
(docs/training.md, "What they show on the demo, and evaluator variants").
It trains a CLIP of the demo evaluator's shape (32x32 pixels, 4-pixel
patches, width 64, 2 + 2 layers, 4 heads, CLS token, learned position
embedding, embedding size 64, logit scale learned from 1/0.07, AdamW with 5%
warm-up and cosine decay, batches of 64 pairs, gradient clipping at 1) on
the world's training split, optionally

- with hard negative captions that swap one side word ("left" <-> "right",
  "top" <-> "bottom", "above" <-> "below", "over" <-> "under"): `hn=K`
  negatives per caption, in the image-to-text direction only (NegCLIP);
- after a supervised pre-training of the image tower (`pre=N` steps): a
  linear head on the CLS token predicts which (3x3 grid cell, colour) pairs
  the scene holds, from each image's scene (binary cross-entropy); with
  `lock=1` the tower then stays frozen while the text tower learns to match
  it (LiT, Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image
  text Tuning").

It prints, on the world's test split: the mean cosine between each image's
embedding and its left-right mirror's, how often a true reference caption
beats the same caption with one side word swapped (`position_pref`, chance
0.5), and text-to-image retrieval@1 of the first reference captions among
the test images.

Differences from dicoflow's evaluator: a word-level tokenizer instead of
CLIP's BPE; exact GELU instead of the demo's QuickGELU; PyTorch's own
initialisation of the attention and MLP layers; the `hn` negatives of a
caption are drawn independently, so they repeat when it has few side words
(dicoflow's `hard_negatives` draws distinct ones); a side word with a comma
attached is not swapped; two threads whatever OMP_NUM_THREADS says. Without pre-training it shows what `dicoflow diagnose` measures on
the demo's evaluator, with or without side-word negatives: a mirror cosine
of 0.99, so side words cannot move the score.

Usage (after `make demo`, with the project's virtualenv):

    .venv/bin/python docs/studies/evaluator_localisation.py \
        --data runs/demo/data steps=750 hn=8 pre=2000 lock=1 seed=0

Options are `name=value`: steps (contrastive steps, 750), lr (1e-3), hn (0),
pre (0), lock (0), seed (0).
"""

import argparse
import glob
import io
import json
import math
import random
import time

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

# CLIP's pixel normalisation, as dicoflow's preprocess stage applies it.
MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SIDE_WORDS = [["left", "right"], ["top", "bottom"], ["above", "below"], ["over", "under"]]
SIZE = 32


def load_split(root, split):
    """Pixels [n, 3, 32, 32] (Pillow bicubic from 64x64), captions, scenes."""
    pixels, captions, scenes = [], [], []
    for path in sorted(glob.glob(f"{root}/{split}/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
            image = image.resize((SIZE, SIZE), Image.BICUBIC)
            pixels.append(((np.asarray(image) / 255.0 - MEAN) / STD).transpose(2, 0, 1))
            captions.append(row["captions"])
            scenes.append(json.loads(row["scene"]))
    return torch.tensor(np.stack(pixels), dtype=torch.float32), captions, scenes


def cell_colour_labels(scene):
    """Multi-hot [54]: which (3x3 grid cell of an object's centre, colour) occur."""
    labels = torch.zeros(9 * len(COLOURS))
    for o in scene["objects"]:
        column, row = min(int(o["x"] * 3), 2), min(int(o["y"] * 3), 2)
        colour = COLOURS.index(o["colour"]) if o["colour"] in COLOURS else COLOURS.index("purple")
        labels[(row * 3 + column) * len(COLOURS) + colour] = 1
    return labels


class Block(nn.Module):
    """Pre-norm transformer block (CLIP's ResidualAttentionBlock)."""

    def __init__(self, width, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x, mask=None):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class VisionTower(nn.Module):
    def __init__(self, width=64, layers=2, heads=4, patch=4, embed=64):
        super().__init__()
        tokens = (SIZE // patch) ** 2 + 1
        scale = width**-0.5
        self.conv = nn.Conv2d(3, width, patch, patch, bias=False)
        self.cls = nn.Parameter(torch.randn(width) * scale)
        self.pos = nn.Parameter(torch.randn(tokens, width) * scale)
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed) * scale)

    def cls_token(self, pixels):
        x = self.conv(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], 1) + self.pos
        x = self.ln_pre(x)
        for block in self.blocks:
            x = block(x)
        return x[:, 0]

    def forward(self, pixels):
        return self.ln_post(self.cls_token(pixels)) @ self.proj


class TextTower(nn.Module):
    def __init__(self, vocab, width=64, layers=2, heads=4, context=32, embed=64):
        super().__init__()
        self.embedding = nn.Embedding(vocab, width)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.pos = nn.Parameter(torch.randn(context, width) * 0.01)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(layers)])
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed) * width**-0.5)
        self.register_buffer("causal", torch.full((context, context), float("-inf")).triu(1))

    def forward(self, ids, lengths):
        n = ids.shape[1]
        x = self.embedding(ids) + self.pos[:n]
        for block in self.blocks:
            x = block(x, self.causal[:n, :n])
        # The end-of-text token's features, as CLIP pools.
        return self.ln_final(x)[torch.arange(ids.shape[0]), lengths - 1] @ self.proj


def words(text):
    return text.replace(":", " :").replace(",", " ,").split()


class WordTokenizer:
    """Word ids (0: padding or unknown, 1: end of text), at most 32 tokens."""

    def __init__(self, caption_lists):
        vocab = sorted({w for captions in caption_lists for c in captions for w in words(c)})
        self.ids = {w: i + 2 for i, w in enumerate(vocab)}

    def __len__(self):
        return len(self.ids) + 2

    def __call__(self, texts):
        seqs = [[self.ids.get(w, 0) for w in words(t)][:31] + [1] for t in texts]
        ids = torch.zeros(len(seqs), max(map(len, seqs)), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, : len(seq)] = torch.tensor(seq)
        return ids, torch.tensor([len(seq) for seq in seqs])


def swap_side_word(caption, rng):
    """The caption with one of its side words swapped; None without one."""
    tokens = caption.split()
    places = [i for i, w in enumerate(tokens) if any(w in group for group in SIDE_WORDS)]
    if not places:
        return None
    i = rng.choice(places)
    group = next(g for g in SIDE_WORDS if tokens[i] in g)
    tokens[i] = rng.choice([w for w in group if w != tokens[i]])
    return " ".join(tokens)


def learning_rate(step, total, peak):
    warmup = max(1, int(0.05 * total))
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def pretrain(vision, pixels, labels, test_pixels, test_labels, steps, batch, generator):
    head = nn.Linear(vision.cls.shape[0], labels.shape[1])
    params = list(vision.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, 1e-3)
        idx = torch.randint(0, len(pixels), (batch,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(head(vision.cls_token(pixels[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        predicted = (head(vision.cls_token(test_pixels)) > 0).float()
    accuracy = (predicted == test_labels).float().mean().item()
    recall = ((predicted * test_labels).sum() / test_labels.sum()).item()
    print(f"pre-training: per-label accuracy {accuracy:.4f}, recall of present pairs {recall:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="runs/demo/data", help="a demo run's data folder")
    parser.add_argument("options", nargs="*", help="name=value (see the module docs)")
    args = parser.parse_args()
    o = dict(option.split("=", 1) for option in args.options)
    steps, lr, hn = int(o.get("steps", 750)), float(o.get("lr", 1e-3)), int(o.get("hn", 0))
    pre, lock, seed = int(o.get("pre", 0)), int(o.get("lock", 0)), int(o.get("seed", 0))
    batch = 64
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)

    pixels, captions, scenes = load_split(args.data, "train")
    test_pixels, test_captions, test_scenes = load_split(args.data, "test")
    tokenizer = WordTokenizer(captions + test_captions)
    vision, text = VisionTower(), TextTower(len(tokenizer))
    started = time.time()
    if pre:
        labels = torch.stack([cell_colour_labels(s) for s in scenes])
        test_labels = torch.stack([cell_colour_labels(s) for s in test_scenes])
        pretrain(vision, pixels, labels, test_pixels, test_labels, pre, batch, generator)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(text.parameters()) + [logit_scale]
    if not lock:
        params += list(vision.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        idx = torch.randint(0, len(pixels), (batch,), generator=generator).tolist()
        chosen = [rng.choice(captions[i]) for i in idx]
        negatives = [n for c in chosen for n in (swap_side_word(c, rng) for _ in range(hn)) if n]
        ids, lengths = tokenizer(chosen + negatives)
        with torch.set_grad_enabled(not lock):
            images = vision(pixels[idx])
        images = F.normalize(images, dim=-1)
        texts = F.normalize(text(ids, lengths), dim=-1)
        logits = logit_scale.exp().clamp(max=100) * images @ texts.T
        target = torch.arange(batch)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :batch].T, target)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            accuracy = (logits.argmax(1) == target).float().mean().item()
            print(f"step {step + 1}: loss {loss.item():.3f}, image-to-text accuracy {accuracy:.3f}")

    with torch.no_grad():
        embedded = F.normalize(vision(test_pixels), dim=-1)
        mirrored = F.normalize(vision(test_pixels.flip(3)), dim=-1)
        mirror_cosine = (embedded * mirrored).sum(-1).mean().item()
        wins = compared = 0
        corrupt = random.Random(1)
        for i, refs in enumerate(test_captions):
            for caption in refs:
                swapped = swap_side_word(caption, corrupt)
                if swapped is None:
                    continue
                ids, lengths = tokenizer([caption, swapped])
                scores = F.normalize(text(ids, lengths), dim=-1) @ embedded[i]
                wins += int(scores[0] > scores[1])
                compared += 1
        ids, lengths = tokenizer([refs[0] for refs in test_captions])
        firsts = F.normalize(text(ids, lengths), dim=-1)
        retrieval = ((firsts @ embedded.T).argmax(1) == torch.arange(len(test_captions))).float().mean().item()
    print(
        f"mirror cosine {mirror_cosine:.3f}, position_pref {wins / compared:.3f} "
        f"({compared} pairs), retrieval@1 {retrieval:.3f}, {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
