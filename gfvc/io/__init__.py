"""Video files in and out, and finding the face to code.

Everything here speaks (H, W, 3) uint8 RGB numpy frames.
"""

from gfvc.io.face import CropBox, FaceLandmarker, crop_and_resize, find_face_crop
from gfvc.io.video import VideoInfo, VideoReader, VideoWriter, read_frames

__all__ = [
    "CropBox",
    "FaceLandmarker",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "crop_and_resize",
    "find_face_crop",
    "read_frames",
]
