"""Deterministic COCO-style benchmark set: N images x 5 reference captions plus
one generated caption per image.

    python3 examples/bench_eval/make_bench_set.py OUT_DIR [N_IMAGES] [--varied]

Writes OUT_DIR/annotations.json and OUT_DIR/results.json. With --varied, every
caption (references and candidates) is then varied in casing (all caps, title
case, random capitals), spacing (doubled, leading, trailing, tabs) and
punctuation (quotes, brackets, !!, ?!, ..., hyphens, slashes, apostrophes,
numbers), from a second fixed seed: the same set otherwise.
"""
import json
import os
import random
import sys

args = [a for a in sys.argv[1:] if a != "--varied"]
varied = "--varied" in sys.argv[1:]
out_dir = args[0]
n_images = int(args[1]) if len(args) > 1 else 5000
rng = random.Random(12345)
vrng = random.Random(678)

PUNCT_WORDS = ['"', "'", "(", ")", "!!", "?!", "...", "--", "-", "/", ";", ":", ",", "&",
               "``", "''", "[", "]", "{", "}", "#1", "$5", "10%", "3:30", "e-mail",
               "U.S.", "Mr.", "don't", "can't", "it's", "o'clock", "rock'n'roll", "1/2"]


def vary(c):
    """Casing, spacing and punctuation noise on one caption."""
    words = c.split(" ")
    out = []
    for w in words:
        r = vrng.random()
        if r < 0.08:
            w = w.upper()
        elif r < 0.16:
            w = w.title()
        elif r < 0.20:
            w = "".join(ch.upper() if vrng.random() < 0.5 else ch for ch in w)
        if vrng.random() < 0.12:
            w = vrng.choice(['"', "'", "(", "["]) + w + vrng.choice(['"', "'", ")", "]", "!", ","])
        out.append(w)
        if vrng.random() < 0.10:
            out.append(vrng.choice(PUNCT_WORDS))
    sep = lambda: vrng.choice([" ", " ", " ", " ", "  ", "\t", " , ", "   "])
    s = out[0]
    for w in out[1:]:
        s += sep() + w
    if vrng.random() < 0.2:
        s = vrng.choice([" ", "  ", "\t"]) + s
    if vrng.random() < 0.2:
        s += vrng.choice([" ", "  ", " !", "!!", "?", " ...", ".."])
    return s


SUBJECTS = ["a man", "a woman", "a young boy", "a little girl", "two dogs", "a black cat",
            "a group of people", "an elderly couple", "a baseball player", "a tennis player",
            "a surfer", "a skier", "a herd of elephants", "three zebras", "a giraffe",
            "a brown horse", "a flock of birds", "a red double decker bus", "a train",
            "a small airplane", "a chef", "two children", "a teddy bear", "a police officer"]
VERBS = ["is riding", "is standing next to", "is sitting on", "is holding", "is looking at",
         "is eating", "is walking down", "is flying over", "is playing with", "is cutting",
         "is parked near", "is jumping over", "is laying on", "are crossing", "waits at",
         "stands in front of", "is carrying", "is throwing", "catches", "leans against"]
ADJS = ["", "", "large", "small", "red", "white", "wooden", "old", "busy", "empty",
        "snowy", "sunny", "crowded", "green", "dirty", "colorful", "tall", "metal"]
OBJECTS = ["a bike", "the street", "a frisbee", "a slice of pizza", "the beach", "a laptop",
           "an umbrella", "a skateboard", "the kitchen counter", "a surfboard", "a plate of food",
           "the snow", "a bench", "a fire hydrant", "a traffic light", "the ocean", "a kite",
           "a sandwich", "a cell phone", "a clock tower", "the field", "a fence", "the water"]
TAILS = ["", "", "", " in the park", " on a sunny day", " near the water", " at night",
         " in a kitchen", " next to a building", " while people watch", " during a game",
         " in front of a crowd", " on the side of the road"]
EXTRAS = ["", "", "", "", "", " It's a beautiful day.", " (photo taken in 2012)",
          " -- what a view!", ", and it's raining.", "; the dog's tail is wagging.",
          " with 3.5 inches of snow", " near 1,000 people", " -- isn't that cute?"]


def caption(subject=None):
    s = subject or rng.choice(SUBJECTS)
    adj = rng.choice(ADJS)
    obj = rng.choice(OBJECTS)
    if adj:
        art, noun = obj.split(" ", 1)
        obj = f"{'an' if adj[0] in 'aeiou' and art in ('a', 'an') else art} {adj} {noun}"
    c = f"{s} {rng.choice(VERBS)} {obj}{rng.choice(TAILS)}{rng.choice(EXTRAS)}"
    c = c[0].upper() + c[1:] if rng.random() < 0.8 else c
    return c + rng.choice([".", ".", "", " ."])


images, anns, results = [], [], []
for i in range(n_images):
    iid = 100000 + 7 * i
    images.append({"id": iid, "file_name": f"COCO_val2014_{iid:012d}.jpg"})
    subject = rng.choice(SUBJECTS)
    for _ in range(5):
        s = subject if rng.random() < 0.7 else None
        anns.append({"image_id": iid, "id": len(anns) + 1, "caption": caption(s)})
    results.append({"image_id": iid,
                    "caption": caption(subject if rng.random() < 0.6 else None).lower()})
rng.shuffle(results)
if varied:
    for a in anns:
        a["caption"] = vary(a["caption"])
    for r in results:
        r["caption"] = vary(r["caption"])
os.makedirs(out_dir, exist_ok=True)
with open(os.path.join(out_dir, "annotations.json"), "w") as f:
    json.dump({"images": images, "annotations": anns}, f)
with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f)
