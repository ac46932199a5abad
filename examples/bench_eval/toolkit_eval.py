"""pycocoevalcap's evaluation (PTB tokenization, then BLEU-1..4, METEOR,
ROUGE-L, CIDEr-D), as COCOEvalCap.evaluate runs it minus SPICE, for the
metrics named in $METRICS (comma-separated: bleu, meteor, rouge, cider;
default bleu,rouge,cider). Prints one JSON object of metric name -> repr of
the value on stdout (the toolkit's own progress output goes to stderr); with
PER_IMAGE.json, also writes per-image values.

    METRICS=bleu,meteor python examples/bench_eval/toolkit_eval.py ANN.json RES.json [PER_IMAGE.json]
"""
import contextlib
import json
import os
import sys

from pycocotools.coco import COCO
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

wanted = os.environ.get("METRICS", "bleu,rouge,cider").split(",")
with contextlib.redirect_stdout(sys.stderr):
    coco = COCO(sys.argv[1])
    coco_res = coco.loadRes(sys.argv[2])
    img_ids = coco_res.getImgIds()
    gts = {i: coco.imgToAnns[i] for i in img_ids}
    res = {i: coco_res.imgToAnns[i] for i in img_ids}
    tok = PTBTokenizer()
    gts, res = tok.tokenize(gts), tok.tokenize(res)
    out, per_image = {}, {i: {"image_id": i} for i in gts}
    for key, make, names in [("bleu", lambda: Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
                             ("meteor", Meteor, ["METEOR"]),
                             ("rouge", Rouge, ["ROUGE_L"]), ("cider", Cider, ["CIDEr"])]:
        if key not in wanted:
            continue
        scorer = make()
        score, scores = scorer.compute_score(gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, v, vs in zip(names, score, scores):
            out[name] = repr(float(v))
            for i, x in zip(gts, vs):
                per_image[i][name] = repr(float(x))
print(json.dumps(out))
if len(sys.argv) > 3:
    with open(sys.argv[3], "w") as f:
        json.dump(list(per_image.values()), f)
