"""Key-frame (base picture) codecs behind one interface; importing this registers them all."""

from gfvc.keyframe.base import (
    CODEC_IDS,
    KEYFRAME_CODECS,
    KeyframeCodec,
    keyframe_codec,
    keyframe_codec_class,
    keyframe_codec_class_by_id,
    register_keyframe_codec,
)
from gfvc.keyframe.lossless import LosslessCodec
from gfvc.keyframe.svtav1 import SvtAv1Codec
from gfvc.keyframe.vvc import VvcCodec
from gfvc.keyframe.x265 import X265Codec

__all__ = [
    "CODEC_IDS",
    "KEYFRAME_CODECS",
    "KeyframeCodec",
    "LosslessCodec",
    "SvtAv1Codec",
    "VvcCodec",
    "X265Codec",
    "keyframe_codec",
    "keyframe_codec_class",
    "keyframe_codec_class_by_id",
    "register_keyframe_codec",
]
