"""Every field of a released checkpoint's ``cfg`` that changes what the model computes, and what
openofa does with it: the one table the readers, the task settings and ``docs/checkpoints.md`` use.

* :data:`MODEL_FIELDS` build the :class:`~openofa.config.OFAConfig` (same names as its fields).
* :data:`REQUIRED_SETTINGS` are architecture switches openofa implements at one value only: a file
  with another value is refused with a one-line error naming the field.
* :data:`TASK_FIELDS` travel with the model as its *task settings* (``meta["task"]``, kept by
  ``ofa convert`` and training's export in ``config.extra["task"]``) and are read by the tasks and
  the image preprocessing (:meth:`openofa.api.OFA.preprocess`).

Every other field of a released file (optimizer, logging, distributed training, data paths ...)
changes nothing at inference; ``docs/checkpoints.md`` lists them by name.
"""

from __future__ import annotations

from typing import Any, Mapping

from openofa.errors import OFAError
from openofa.tasks.base import PROMPT_TYPES

MODEL_FIELDS: dict[str, str] = {
    "encoder_layers / decoder_layers / encoder_embed_dim / decoder_embed_dim / encoder_ffn_embed_dim / "
    "decoder_ffn_embed_dim / encoder_attention_heads / decoder_attention_heads / decoder_input_dim / "
    "decoder_output_dim": "the transformer's sizes (checked against the tensors' shapes)",
    "resnet_type": "the image trunk (resnet50/101/152)",
    "max_source_positions / max_target_positions": "position tables (shapes)",
    "token_bucket_size / image_bucket_size": "relative position buckets (shapes, biases)",
    "attn_scale_factor": "scale of the absolute position biases",
    "code_image_size": "the image-code grid of the decoder (text-to-image, infilling)",
    "disable_entangle": "True (every released file): the decoder's input is the token embedding alone",
    "entangle_position_embedding": "True: position embeddings added to the encoder's token and patch "
                                   "embeddings (no released file)",
    "scale_attn / scale_fc / scale_heads / scale_resids": "NormFormer extras; read from the tensors, a "
                                                          "disagreeing flag is noted",
    "num_bins / code_dict_size / bpe / bpe_dir": "the vocabulary (location bins, image codes, English "
                                                 "BPE or Chinese BERT wordpieces)",
    "vocab_size": "the vocabulary's size (read from the tensors)",
    "patch_image_size": "the image side the model was trained at (also a task setting)",
    "interpolate_position / orig_patch_image_size": "image positions learnt for an orig_patch_image_size "
                                                    "grid, bilinearly interpolated to a larger grid",
    "dropout / attention_dropout / activation_dropout / relu_dropout / encoder_drop_path_rate / "
    "decoder_drop_path_rate / resnet_drop_path_rate": "training only (zero at inference); kept for finetuning",
    "pad / eos / unk": "special token ids (checked: 1, 2, 3 in every OFA vocabulary)",
    "adapter / adapter_dim": "bottleneck adapters in every layer (parameter-efficient tuning, docs/petl.md)",
    "encoder_prompt / decoder_prompt / *_prompt_type / *_prompt_length / *_prompt_projection / *_prompt_dim":
        "prefix tuning: per-layer key/value prefixes (type prefix only, as the original's scripts)",
}

# switches with one implemented value; (value, what the other value would mean)
REQUIRED_SETTINGS: dict[str, Any] = {
    "encoder_normalize_before": True,
    "decoder_normalize_before": True,
    "no_scale_embedding": True,
    "layernorm_embedding": True,
    "patch_layernorm_embedding": True,
    "code_layernorm_embedding": True,
    "add_type_embedding": True,
    "share_all_embeddings": True,
    "share_decoder_input_output_embed": True,
    "activation_fn": "gelu",
    "encoder_learned_pos": True,
    "decoder_learned_pos": True,
    "no_token_positional_embeddings": False,
    "cross_self_attention": False,
    "no_cross_attention": False,
    "adaptive_input": False,
    "adaptive_softmax_cutoff": None,
    "tie_adaptive_weights": False,
    "encoder_layers_to_keep": None,
    "decoder_layers_to_keep": None,
    "quant_noise_pq": 0,
}

TASK_FIELDS: dict[str, str] = {
    "_name": "the task the file was finetuned for; task-specific settings below apply to that task only",
    "patch_image_size": "image side of every task run with this file (grounding: of refcoco files only)",
    "max_image_size": "grounding: RandomResize's largest side and the scale of bins to pixels",
    "orig_patch_image_size": "with interpolate_position, the side the image positions were trained at",
    "imagenet_default_mean_and_std": "image normalisation: ImageNet mean/std when true, 0.5/0.5 otherwise",
    "prompt_type": "VQA and entailment decoder prefix: prev_output (source without eos), none, or src",
    "add_object": "VQA: detected object labels appended to the question when the input gives them",
    "add_caption": "entailment: the premise caption enters the prompt when the input gives one",
    "constraint_range": "generation limited to ids start..end-1 (ids 0-3 stay open, as in the original)",
    "max_src_length": "input text truncation (words) for the file's own task",
    "max_tgt_length": "training: target truncation",
    "num_bins": "location tokens (also in the model config)",
    "code_dict_size": "image-code tokens (also in the model config)",
    "bpe / bpe_dir": "English BPE or Chinese BERT vocabulary (also in the model config)",
}

# the task fields kept with a model (everything else in cfg['task'] is data and training setup)
KEPT_TASK_FIELDS = ("_name", "patch_image_size", "max_image_size", "orig_patch_image_size",
                    "imagenet_default_mean_and_std", "prompt_type", "add_object", "add_caption",
                    "constraint_range", "max_src_length", "max_tgt_length", "num_bins", "code_dict_size",
                    "bpe")

# the kept settings that belong to the task a file was finetuned for; the others (image side,
# mean/std) describe the model for every task
TASK_SPECIFIC = ("prompt_type", "max_src_length", "add_object", "add_caption", "constraint_range", "max_image_size")


def check_required(model_cfg: Mapping[str, Any], source: str) -> None:
    """One-line error naming every switch of ``model_cfg`` set to a value openofa does not implement."""
    bad = [f"{name}={model_cfg[name]!r}" for name, want in REQUIRED_SETTINGS.items()
           if name in model_cfg and not _same_setting(model_cfg[name], want)]
    if bad:
        raise OFAError(f"{source}: unsupported setting(s) {', '.join(bad)}; openofa implements the released "
                       "OFA variant only (see docs/checkpoints.md)")


def _same_setting(have: Any, want: Any) -> bool:
    """``have`` means ``want``: an off switch (False, None, 0) is off however a file spells it."""
    if want in (False, None, 0) and not isinstance(want, str):
        return have in (False, None, 0, "", "none")
    return have == want


def task_settings(task_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The task settings a model keeps from its file: :data:`KEPT_TASK_FIELDS` of ``cfg['task']``
    (``cfg['model']`` for the few the original stores there), each checked for a value openofa can
    honour."""
    out: dict[str, Any] = {}
    for name in KEPT_TASK_FIELDS:
        value = task_cfg.get(name, model_cfg.get(name) if name != "_name" else None)
        if value is not None and isinstance(value, (str, int, float, bool)):
            out[name] = value
    prompt = out.get("prompt_type")
    if prompt is not None and prompt not in PROMPT_TYPES:
        raise OFAError(f"{source}: prompt_type={prompt!r} is not supported (expected {', '.join(PROMPT_TYPES)})")
    if out.get("constraint_range"):
        from openofa.generation.constraints import TokenRange

        try:
            TokenRange.parse(out["constraint_range"])
        except OFAError as e:
            raise OFAError(f"{source}: {e}") from None
    for name in ("patch_image_size", "max_image_size", "max_src_length", "max_tgt_length"):
        if name in out and (isinstance(out[name], bool) or not isinstance(out[name], int) or out[name] <= 0):
            raise OFAError(f"{source}: {name}={out[name]!r} must be a positive integer")
    return out


def own_task(settings: Mapping[str, Any]) -> str | None:
    """Our name of the task a file's settings were made for (the task registry knows the original's
    task names: ``vqa_gen``, ``refcoco``, ``snli_ve``, a GLUE task ...); None for a pretraining file
    or none named; an unknown task's own name otherwise (its task-specific settings then apply to
    none of ours)."""
    from openofa.tasks import find_task

    name = str(settings.get("_name") or "")
    if name in ("", "unify_task"):
        return None
    return find_task(name) or name


# the original's zero-shot evaluation scripts, per task (run on the pretrained files)
ZERO_SHOT: dict[str, dict[str, Any]] = {
    # run_scripts/vqa/evaluate_vqa_zeroshot.sh: --patch-image-size=480 --prompt-type=none --beam=20
    # --unnormalized --temperature=1.0 (zero_shot_step: no answer trie)
    "vqa": {"patch_image_size": 480, "prompt_type": "none",
            "generation": {"beam_size": 20, "normalize_scores": False, "temperature": 1.0}},
    # run_scripts/refcoco/evaluate_refcoco_zeroshot.sh: --patch-image-size=480, beam 5, 4 tokens
    "ground": {"patch_image_size": 480, "max_image_size": 480},
    # run_scripts/snli_ve/evaluate_snli_ve_zeroshot.sh: --patch-image-size=384 --prompt-type=prev_output
    "entail": {"patch_image_size": 384, "prompt_type": "prev_output", "max_src_length": 80},
}
