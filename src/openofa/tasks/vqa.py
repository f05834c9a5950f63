"""Visual question answering (VQAv2).

Source: the normalised question (lower-cased, '?' appended) and optionally " object: a b c" with
detected object labels. As in the official finetuning (``prompt_type=prev_output``) the source
without its eos is also forced as the decoder prefix, so the answer follows the question.

Three ways to answer: ``beam`` (open-vocabulary beam search, beam 5, unnormalised scores — the
original's ``evaluate_vqa_beam``), ``trie`` (the same beam search restricted to a candidate list)
and ``allcand`` (score every candidate with teacher forcing, the original's default validation).
Trained on the most confident answer (its confidence weights the loss); scored by VQA accuracy.
"""

from __future__ import annotations

from openofa.errors import OFAError
from openofa.tasks.base import IMAGE, Example, Field, Task, layout, prompt_prefix
from openofa.text.tokenizer import pre_question

MAX_OBJECTS = 30


def source(tok, question: str, objects: list[str] | None, max_words: int, max_objects: int = MAX_OBJECTS) -> list[int]:
    """bos + ' ' + the normalised question (with '?') [+ ' object: ' + the first objects] + eos."""
    q = pre_question(question, max_words)
    q = q if q.endswith("?") else q + "?"
    ids = tok.encode(" " + q)
    if objects:
        ids += tok.encode(" object: " + " ".join(objects[:max_objects]))
    return [tok.bos] + ids + [tok.eos]


def _read(rec, fields, where, targets):
    from openofa.data.records import BadRow, field_text, parse_answers, parse_box_field, parse_objects

    rec.text = field_text(fields, "question", where)
    if "answers" in fields:
        rec.answers = parse_answers(fields.get("answers"), where)
    elif targets:
        raise BadRow(f"{where}: missing field 'answers'", "answers")
    rec.objects = parse_objects(fields.get("objects"), where)
    if fields.get("box") not in (None, ""):  # JSONL: the object the question is about (optional)
        rec.box = parse_box_field(fields["box"], where)


class VQA(Task):
    name = "vqa"
    help = "answer a question about images"
    aliases = ("vqa_gen",)
    inputs = (IMAGE,
              Field("question", "text", "the question", required=True, short="-q"),
              Field("objects", "texts", "detected object labels added to the source (' object: a b c')"))
    options = (Field("answers", "texts", "candidate answers (comma-separated or @file with one per line)"),
               Field("mode", "choice", "beam: open answers; trie: beam search over the candidates; "
                                       "allcand: score every candidate", choices=("beam", "trie", "allcand")))
    # vqa_{train,val,test}.tsv: question-id, image-id, question, answers "conf|!+ans&&...",
    #   predicted object labels "a&&b", image base64 (, caption: unused)
    layouts = (layout("vqa", ["id", "image", "question", "answers", "objects"], [0, 5, 2, 3, 4], owner="vqa",
                      optional=["objects"], targets=["answers"], read=_read, max_src_length=80, max_tgt_length=30,
                      patch_image_size=480,
                      settings={"max_object_length": 30, "add_object": True, "prompt_type": "prev_output"},
                      doc="question-id, image-id, question, conf|!+answer&&..., object labels a&&b, image"),)
    image_size = 480
    generation = dict(beam_size=5, max_len_a=0, max_len_b=200, min_len=1, normalize_scores=False)
    max_src_length = 128
    prompt_type = "prev_output"
    output = "answer"
    metric_name = "VQA accuracy"
    candidates = True

    def prepare(self, ofa, image, question: str, objects: list[str] | None = None) -> Example:
        if not question.strip():
            raise OFAError("vqa: the question is empty")
        ofa.warn_unknown(self.name, "question", question)
        src = source(ofa.tokenizer, question, objects, int(ofa.setting(self.name, "max_src_length", self.max_src_length)))
        prefix = prompt_prefix(src, ofa.setting(self.name, "prompt_type", self.prompt_type), self.name,
                               ("prev_output", "none"))
        return Example(src, ofa.image_tensor(image, self), prefix)

    def predict(self, ofa, examples, answers: list[str] | None = None, mode: str | None = None, **options):
        mode = mode or ("allcand" if answers else "beam")
        if mode not in ("beam", "trie", "allcand"):
            raise OFAError(f"vqa: unknown mode {mode!r}; expected beam, trie or allcand")
        if mode != "beam" and not answers:
            raise OFAError(f"vqa: mode {mode!r} needs a list of candidate answers")
        if mode == "allcand":
            cands = ofa.encode_candidates(self.name, "answers", answers)
            scores = ofa.score_candidates(examples, cands)
            out = []
            for row in scores:
                best = int(row.argmax())
                out.append({"answer": answers[best], "score": float(row[best])})
            return out
        trie = ofa.answer_trie(answers) if mode == "trie" else None
        hypos = ofa.generate(examples, self.generation, task=self.name, constraints=trie, **options)
        return [{"answer": ofa.decode_text(h.tokens[len(ex.prefix):]).strip(), "score": h.score}
                for ex, h in zip(examples, hypos)]

    def sample(self, b, r):
        img = b.load_image(r)
        answers = r.answers or {}
        answer = max(answers, key=answers.get)  # first of the best, like the original
        tgt = b.encode(" " + answer, length=b.max_tgt_length)
        objects = r.objects if b.add_object else None
        src = source(b.tok, r.text, objects, b.max_src_length, b.max_object_length)
        sample = b.sample(r, src, tgt, b.patch_of(img), conf=float(answers[answer]))
        sample.update(b.with_prompt(src, tgt))
        if r.box is not None and b.attend_box and b.image_transform is None:
            sample["attend_box"] = b.resized_box(r, img.size)
        return sample

    def reference(self, r):
        return dict(r.answers or {})

    def inputs_of(self, r, layout):
        return {"image": r.image, "question": r.text, "objects": r.objects}

    def eval_options(self, refs, options):
        if options.get("answers") is None and options.get("mode") in ("trie", "allcand"):
            options = {**options, "answers": sorted({a for r in refs for a in r})}
        return options

    def with_candidates(self, candidates, options):
        if options.get("mode", "allcand") != "beam":
            options = {"mode": "allcand", "answers": candidates, **options}
        return options

    def metric(self, predictions, references, layout):
        from openofa.metrics import vqa_headline

        return {self.metric_name: vqa_headline(predictions, references)}
