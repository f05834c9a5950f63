"""Visual entailment (SNLI-VE): does the image support a sentence? yes / no / maybe.

Prompt ' does the image describe " {hypothesis} "?' (or, with a premise caption,
' can image and text1 " {premise} " imply text2 " {hypothesis} "?'); the source without eos is the
decoder prefix (``prompt_type=prev_output``, the official setting; a file's own ``prompt_type``
wins: ``none`` forces nothing, ``src`` the whole source with its eos), and each label is scored by
teacher forcing with the log-softmax renormalised over the label set, as the original's evaluation
does. Trained on the label word; scored by accuracy.
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import IMAGE, Example, Field, Task, layout, prompt_prefix
from openofa.text.tokenizer import pre_caption

PROMPT = ' does the image describe " {} "?'
PROMPT_WITH_PREMISE = ' can image and text1 " {} " imply text2 " {} "?'
LABELS = ("yes", "no", "maybe")
#: the original's label names -> the words the model outputs
LABEL_WORDS = {"contradiction": "no", "entailment": "yes", "neutral": "maybe", "yes": "yes", "no": "no",
               "maybe": "maybe"}


def source(tok, hypothesis: str, premise: str | None, max_words: int) -> list[int]:
    hyp = pre_caption(hypothesis, max_words)
    if premise is None:
        return tok.encode(PROMPT.format(hyp), bos=True, eos=True)
    text = PROMPT_WITH_PREMISE.format(pre_caption(premise, max_words), hyp)
    return tok.encode(text, bos=True, eos=True)


def _read(rec, fields, where, targets):
    from openofa.data.records import field_str, field_text, read_label

    rec.text = field_text(fields, "hypothesis", where)
    rec.text2 = field_str(fields, "premise", where, required=False)
    rec.label = read_label(fields, "entail", LABEL_WORDS, where, targets)


class Entailment(Task):
    name = "entail"
    help = "does the image support the hypothesis? yes / no / maybe"
    languages = ("en",)  # the original has English prompts only
    aliases = ("snli_ve", "snli-ve", "entailment", "visual_entailment")
    inputs = (IMAGE, Field("hypothesis", "text", "the sentence to check", required=True),
              Field("premise", "text", "a caption of the image (SNLI-VE's premise)"))
    # snli_ve_{train,dev,test}.tsv: uniq-id, image-id, image, hypothesis, caption (premise), label
    layouts = (layout("entail", ["id", "image", "hypothesis", "premise", "label"], [0, 2, 3, 4, 5], owner="entail",
                      targets=["label"], read=_read, max_src_length=80, max_tgt_length=20, patch_image_size=480,
                      settings={"prompt_type": "prev_output"},
                      doc="uniq-id, image-id, image, hypothesis, premise caption, "
                          "label (entailment|neutral|contradiction)"),)
    image_size = 480
    max_src_length = 80
    candidates = True

    def prepare(self, ofa, image, hypothesis: str, premise: str | None = None) -> Example:
        if not hypothesis.strip():
            raise OFAError("entail: the hypothesis is empty")
        ofa.warn_unknown(self.name, "hypothesis", hypothesis)
        length = int(ofa.setting(self.name, "max_src_length", self.max_src_length))
        src = source(ofa.tokenizer, hypothesis, premise or None, length)
        prefix = prompt_prefix(src, ofa.setting(self.name, "prompt_type", "prev_output"), self.name)
        return Example(src, ofa.image_tensor(image, self), prefix=prefix)

    def predict(self, ofa, examples, labels: tuple[str, ...] = LABELS, **options):
        cands = ofa.encode_candidates(self.name, "labels", labels)
        scores = ofa.score_candidates(examples, cands)
        out = []
        for row in scores:
            best = int(row.argmax())
            out.append({"label": labels[best], "scores": {a: float(s) for a, s in zip(labels, row)}})
        return out

    def sample(self, b, r):
        use_premise = r.text2 is not None if b.add_caption is None else b.add_caption
        if use_premise and r.text2 is None:
            from openofa.data.records import BadRow

            raise BadRow(f"{r.where}: missing the premise (add_caption=True)", "field")
        src = source(b.tok, r.text, r.text2 if use_premise else None, b.max_src_length)
        tgt = b.encode(" " + r.label)
        sample = b.sample(r, src, tgt, b.patch_image(r))
        sample.update(b.with_prompt(src, tgt))
        return sample

    def inputs_of(self, r, layout):
        return {"image": r.image, "hypothesis": r.text, "premise": r.text2}
