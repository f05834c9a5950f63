"""The OFA network: ResNet trunk, encoder, decoder, attention. See ofa.py for the entry points."""

from openofa.model.decoder import DecoderCache
from openofa.model.encoder import EncoderOutput
from openofa.model.ofa import OFAModel, build_model, init_weights, model_from_state_dict

__all__ = ["OFAModel", "build_model", "init_weights", "model_from_state_dict", "EncoderOutput", "DecoderCache"]
