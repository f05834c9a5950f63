"""The project's own small model, ``mini``: what it needs beyond OFA as released.

``mini`` is an OFA of 3 + 3 layers of width 96 with a small ResNet trunk (:mod:`openofa.config`),
trained from scratch on CPU by ``recipes/scenes_mini.yaml`` on procedural scenes and shipped in
the package (``openofa/weights/mini``); ``openofa.load()`` and ``ofa`` use it when no model is
given. docs/own_model.md tells how it was trained and what it scores. The OFA core runs it as
any other checkpoint; training it uses these mechanisms, which are not in the original:

* :mod:`openofa.mini.scenes`: the procedural scenes it is trained and tested on (``ofa scenes``)
* :mod:`openofa.mini.vocab`: its text vocabularies: the BPE tokens of the scenes (``dict.scenes.txt``),
  and the reading model's letters and digits (``dict.read.txt``)
* :mod:`openofa.mini.trunk`: pretraining the image trunk alone (a recipe stage with ``task: trunk``)
* :mod:`openofa.mini.box_attention`: a loss pulling the decoder's cross-attention onto the box an
  expression names (recipe keys ``box_attention_*``)
* :mod:`openofa.mini.weights`: finding and exporting the shipped weights
* :mod:`openofa.mini.demo`: ``ofa demo``
* :mod:`openofa.mini.draw`: the drawing model's scenes, captions and the judge of its drawings
* :mod:`openofa.mini.vq`: training its VQ tokenizer (a recipe stage with ``task: vq``)
* :mod:`openofa.mini.read`: the reading model's text lines and their characters' boxes (its
  trunk stage reads those as detection rows)

The trainer knows none of them by name. Importing this package registers three training
extensions (:mod:`openofa.train.extensions`, which imports it before its first look-up): the
criterion hook ``box_attention``, which wraps the cross-entropy when a recipe sets
``box_attention_weight``, and the initialisation hooks ``trunk`` and ``vq``, which run a ``task:
trunk`` or ``task: vq`` stage in place of the trainer. All are named as ``module:function`` and
imported when used.
"""

from openofa.train.extensions import register_criterion, register_initialisation

register_criterion("box_attention", "openofa.mini.box_attention:extend", check="openofa.mini.box_attention:check")
register_initialisation("trunk", "openofa.mini.trunk:pretrain_trunk")
register_initialisation("vq", "openofa.mini.vq:train_vq")
