"""Load a COCO captions annotations file and a results file the way every
captioning codebase does: pycocotools' COCO() and loadRes(), then
pycocoevalcap's COCOEvalCap up to its scorers.

Usage: python coco_captions.py ANNOTATIONS.json RESULTS.json

COCOEvalCap.evaluate() tokenizes with the Stanford PTB tokenizer and scores
METEOR and SPICE, all three Java programs. To stay Java-free this script does
what evaluate() does before and after them: it collects `gts`/`res` from the
loaded indexes exactly as evaluate() does, tokenizes by lowercasing and
splitting on whitespace (a stand-in, not the PTB tokenizer), and runs the
pure-Python scorers (BLEU, ROUGE-L, CIDEr-D's `Cider`). Prints one JSON object:
counts of what was loaded and the scores. Any problem with the files raises,
as it would in the toolkit (e.g. KeyError: 'id' for annotations without ids).
"""
import json
import sys
import contextlib
import io

from pycocotools.coco import COCO
from pycocoevalcap.eval import COCOEvalCap
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.cider.cider import Cider


def main(annotations, results):
    with contextlib.redirect_stdout(io.StringIO()):  # the toolkit prints progress
        coco = COCO(annotations)
        res = coco.loadRes(results)
    ev = COCOEvalCap(coco, res)
    ev.params["image_id"] = res.getImgIds()  # as the COCO caption example does
    gts, cands = {}, {}
    for img in ev.params["image_id"]:
        gts[img] = [" ".join(a["caption"].lower().split()) for a in ev.coco.imgToAnns[img]]
        cands[img] = [" ".join(a["caption"].lower().split()) for a in ev.cocoRes.imgToAnns[img]]
    scores = {}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
                          (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        with contextlib.redirect_stdout(io.StringIO()):
            score, _ = scorer.compute_score(gts, cands)
        for name, value in zip(names, score if isinstance(score, list) else [score]):
            scores[name] = float(value)
    print(json.dumps({
        "images": len(coco.getImgIds()),
        "annotations": len(coco.getAnnIds()),
        "annotation_ids_unique": len(set(coco.getAnnIds())) == len(coco.dataset["annotations"]),
        "results": len(res.getAnnIds()),
        "evaluated": len(gts),
        "scores": scores,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
