"""Which hardware decoder a camera opens with: probed once per process, with the reason when it falls back."""

from __future__ import annotations

import functools
import logging

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

log = logging.getLogger(__name__)

HW_DECODERS = ("cuda", "vaapi", "qsv")
_PROBE_CODECS = ("h264", "hevc")


@functools.cache
def hw_decoder_unusable(device_type: str) -> str | None:
    """Why ``device_type`` cannot decode camera video here, or None when it can; probed once per process."""
    if device_type not in hwdevices_available():
        return f"this FFmpeg build has no {device_type} support"
    for codec in _PROBE_CODECS:
        try:
            HWAccel(device_type).create(av.Codec(codec, "r"))
        except NotImplementedError:  # this codec has no decoder config for the device type
            continue
        except Exception as exc:  # av_hwdevice_ctx_create: no device, no driver, no permission
            return f"no usable {device_type} device ({type(exc).__name__}: {exc})"
        return None
    return f"this FFmpeg build cannot decode {' or '.join(_PROBE_CODECS)} with {device_type}"


@functools.cache
def choose_hw_decoder(hwaccel: str) -> str | None:
    """The hardware decoder to open cameras with for a ``hwaccel`` setting, or None for the CPU.

    Logs why it falls back to the CPU once per process: a warning when a device was asked for by name.
    """
    if hwaccel == "none":
        return None
    candidates = HW_DECODERS if hwaccel == "auto" else (hwaccel,)
    reasons = []
    for device_type in candidates:
        reason = hw_decoder_unusable(device_type)
        if reason is None:
            return device_type
        reasons.append(reason)
    log.log(
        logging.INFO if hwaccel == "auto" else logging.WARNING,
        "hwaccel %s: decoding on the CPU: %s",
        hwaccel,
        "; ".join(reasons),
    )
    return None
