"""Standard interop: a .gfv file <-> an HEVC/VVC Annex-B stream carrying GFV/GFVE SEI messages.

The SEI syntax itself (bit-exact writer and parser) is :mod:`gfvc.bitstream.sei`; this package
maps gfvc's streams onto it, one module per job:

* ``layout``: which feature field goes where in the GFV/GFVE syntax (:func:`plan_layout`);
* ``grid``: the exact map between the .gfv integers and the SEI integers (:class:`GridMap`);
* ``uri``: the metadata URI of the base message that rebuilds the .gfv header;
* ``exporter``: .gfv -> Annex-B (:func:`export_stream`, :func:`gfv_to_annexb`);
* ``importer``: Annex-B -> .gfv (:func:`import_stream`, :func:`annexb_to_gfv`, :func:`read_any`);
* ``encoder_cfg``: the VTM/HM configuration that makes the reference encoders write the same
  messages (:func:`vtm_cfg`).

``export_stream`` writes, for every key unit of a .gfv file, its key picture (the HEVC or
VVC picture as coded; re-encoded with x265 when the key frame is in another format) and
then one suffix SEI with one GFV message per frame of that key unit's segment, ``gfv_cnt``
0..N-1, the first being the base-picture message (the key frame's own features). Any
HEVC decoder plays the key frame; ``import_stream`` turns the stream back into a .gfv file
with the same integer features (and, when the key frame was HEVC, the identical file).

The mapping between the .gfv integers and the SEI integers (docs/sei.md has the long form):
feature scalar j of frame t is ``acc[t, j] / qstep`` in model units (``Decoder.trace``).
Coordinates are carried in SEI units ``u = x * s + o`` (mesh: pixels normalised to
[-1, 1], s = 2/size, o = -1; other models: s = 1, o = 0) on the 2^-P grid, matrix elements
on the 2^-Q grid. P (and Q) is the smallest precision for which one .gfv step is a whole
number ``a = s * 2^P / qstep`` of SEI steps and the offset ``o * 2^P`` is whole, so the
SEI integer is ``acc * a + o * 2^P`` exactly and import divides back. When no such P <= 32
exists (qstep not a power of two) P is the smallest with a >= 2: the SEI then carries the
nearest grid point and import rounds back, still exactly.

Everything the .gfv header needs and the SEI syntax cannot hold (model id and hash, qstep,
coder, frame rate, field layout) travels in the base message's NN URI (gfv_nn_mode_idc 1),
which is what the URI is for: naming the network that animates the base picture.
"""

from gfvc.interop.encoder_cfg import vtm_cfg
from gfvc.interop.exporter import ExportReport, export_stream, gfv_groups, gfv_to_annexb
from gfvc.interop.grid import GridMap
from gfvc.interop.importer import (
    ImportReport,
    PictureGroup,
    annexb_to_gfv,
    import_stream,
    read_annexb,
    read_any,
)
from gfvc.interop.layout import MatrixSlot, SeiLayout, feature_fields, plan_layout
from gfvc.interop.uri import parse_uri

__all__ = [
    "ExportReport",
    "GridMap",
    "ImportReport",
    "MatrixSlot",
    "PictureGroup",
    "SeiLayout",
    "annexb_to_gfv",
    "export_stream",
    "feature_fields",
    "gfv_groups",
    "gfv_to_annexb",
    "import_stream",
    "parse_uri",
    "plan_layout",
    "read_annexb",
    "read_any",
    "vtm_cfg",
]
