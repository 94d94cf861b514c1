"""Links between tiers: bandwidth, round-trip time, the phone's radio power model, presets and parsing.

Every number here is explained, with its source, in docs/cost-model.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dnnsplit.errors import UsageError


@dataclass(frozen=True)
class RadioModel:
    """Huang et al. (MobiSys 2012) radio power model: P = a_up*up_Mbps + a_down*down_Mbps + base (mW)."""

    name: str
    a_up_mw_per_mbps: float
    a_down_mw_per_mbps: float
    base_mw: float

    def upload_power_w(self, up_mbps: float) -> float:
        # While uploading the downlink carries (almost) nothing: the model's down term is 0.
        return (self.a_up_mw_per_mbps * up_mbps + self.base_mw) / 1000.0

    def download_power_w(self, down_mbps: float) -> float:
        return (self.a_down_mw_per_mbps * down_mbps + self.base_mw) / 1000.0


# Coefficients of Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE
# Networks", MobiSys 2012, as commonly cited by DNN-partitioning work.
RADIO_MODELS: dict[str, RadioModel] = {
    "lte": RadioModel("lte", 438.39, 51.97, 1288.04),
    "3g": RadioModel("3g", 868.98, 122.12, 817.88),
    "wifi": RadioModel("wifi", 283.17, 137.01, 132.86),
}


@dataclass(frozen=True)
class LinkSpec:
    """One link between consecutive tiers; ``radio`` names the phone's radio model if the link is the phone's.

    ``radio`` is None for wired links (the edge-cloud backhaul), which never drive the phone's radio power.
    """

    up_mbps: float
    down_mbps: float
    rtt_ms: float
    radio: str | None = "lte"
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("up_mbps", "down_mbps"):
            if not (getattr(self, key) > 0 and math.isfinite(getattr(self, key))):
                raise UsageError(
                    f"link {key} must be > 0 (got {getattr(self, key)})", "use a positive number"
                )
        if not (self.rtt_ms >= 0 and math.isfinite(self.rtt_ms)):
            raise UsageError(f"link rtt_ms must be >= 0 (got {self.rtt_ms})", "use a non-negative number")
        if self.radio is not None and self.radio not in RADIO_MODELS:
            raise UsageError(f"unknown radio model '{self.radio}'", f"use one of {', '.join(RADIO_MODELS)}")

    @property
    def radio_model(self) -> RadioModel | None:
        return None if self.radio is None else RADIO_MODELS[self.radio]

    def up_ms(self, nbytes: float) -> float:
        """Time to send ``nbytes`` up the link: bits / (Mbit/s) gives microseconds, hence the /1000."""
        return nbytes * 8.0 / (self.up_mbps * 1000.0)

    def down_ms(self, nbytes: float) -> float:
        return nbytes * 8.0 / (self.down_mbps * 1000.0)

    @property
    def is_preset(self) -> bool:
        return NETWORK_PRESETS.get(self.name) == self

    def describe(self) -> str:
        """The link as ``parse_link`` reads it back: a preset's name, or ``up=..,down=..,rtt=..``, with
        ``radio=..`` unless it is the default (lte)."""
        if self.is_preset:
            return self.name
        text = f"up={self.up_mbps:.15g},down={self.down_mbps:.15g},rtt={self.rtt_ms:.15g}"
        return text if self.radio == "lte" else f"{text},radio={self.radio or 'none'}"

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "up_mbps": self.up_mbps,
            "down_mbps": self.down_mbps,
            "rtt_ms": self.rtt_ms,
            "radio": self.radio,
        }


# Uplinks are the averages measured by Neurosurgeon (Kang et al., ASPLOS 2017: 3G, LTE, Wi-Fi) and reused by
# DADS (Hu et al., INFOCOM 2019), which adds CAT1; downlinks, RTTs and 5G are documented assumptions.
NETWORK_PRESETS: dict[str, LinkSpec] = {
    "cat1": LinkSpec(up_mbps=0.13, down_mbps=1.0, rtt_ms=100.0, radio="lte", name="cat1"),
    "3g": LinkSpec(up_mbps=1.1, down_mbps=3.0, rtt_ms=100.0, radio="3g", name="3g"),
    "4g": LinkSpec(up_mbps=5.85, down_mbps=13.0, rtt_ms=60.0, radio="lte", name="4g"),
    "5g": LinkSpec(up_mbps=30.0, down_mbps=240.0, rtt_ms=25.0, radio="lte", name="5g"),
    "wifi": LinkSpec(up_mbps=18.88, down_mbps=50.0, rtt_ms=10.0, radio="wifi", name="wifi"),
}
DEFAULT_NETWORK = "wifi"

# Edge-cloud: a wired metro/regional backhaul (1 Gbit/s each way, 20 ms round trip).
BACKHAUL = LinkSpec(up_mbps=1000.0, down_mbps=1000.0, rtt_ms=20.0, radio=None, name="backhaul")

_KEYS = {"up": "up_mbps", "down": "down_mbps", "rtt": "rtt_ms"}
_SYNTAX = "write a preset (cat1, 3g, 4g, 5g, wifi) or up=MBPS,down=MBPS,rtt=MS[,radio=lte|3g|wifi|none]"


def parse_link(text: str) -> LinkSpec:
    """Parse ``4g``, ``up=8,down=40,rtt=30`` or a preset with overrides (``wifi,rtt=5``) into a LinkSpec.

    A custom link without ``radio=`` uses the LTE radio model (cellular is the common case for a phone).
    """
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise UsageError("empty link specification", _SYNTAX)
    values: dict[str, object] = {}
    name = "custom"
    if "=" not in items[0]:
        base = items.pop(0).lower()
        if base not in NETWORK_PRESETS:
            raise UsageError(f"unknown network preset '{base}'", f"use one of {', '.join(NETWORK_PRESETS)}")
        preset = NETWORK_PRESETS[base]
        values = {"up_mbps": preset.up_mbps, "down_mbps": preset.down_mbps, "rtt_ms": preset.rtt_ms}
        values["radio"] = preset.radio
        name = base if not items else f"{base}+custom"
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"malformed link item '{item}' in '{text}'", _SYNTAX)
        if key == "radio":
            radio = raw.strip().lower()
            if radio != "none" and radio not in RADIO_MODELS:
                raise UsageError(
                    f"unknown radio model '{radio}' in '{text}'", f"use one of {', '.join(RADIO_MODELS)}"
                )
            values["radio"] = None if radio == "none" else radio
            continue
        if key not in _KEYS:
            raise UsageError(f"unknown link key '{key}' in '{text}'", "use up, down, rtt and radio")
        try:
            number = float(raw)
        except ValueError:
            raise UsageError(f"link value '{raw.strip()}' for '{key}' is not a number", _SYNTAX) from None
        if not math.isfinite(number):
            raise UsageError(f"link value '{raw.strip()}' for '{key}' is not finite", _SYNTAX)
        if key in ("up", "down") and not number > 0:
            raise UsageError(f"link '{key}' must be > 0 (got {raw.strip()})", "bandwidths are in Mbit/s")
        if key == "rtt" and not number >= 0:
            raise UsageError(f"link 'rtt' must be >= 0 (got {raw.strip()})", "round-trip time is in ms")
        values[_KEYS[key]] = number
    missing = [k for k, field in _KEYS.items() if field not in values]
    if missing:
        raise UsageError(f"link '{text}' lacks {', '.join(missing)}", _SYNTAX)
    return LinkSpec(
        up_mbps=float(values["up_mbps"]),  # type: ignore[arg-type]
        down_mbps=float(values["down_mbps"]),  # type: ignore[arg-type]
        rtt_ms=float(values["rtt_ms"]),  # type: ignore[arg-type]
        radio=values.get("radio", "lte"),  # type: ignore[arg-type]
        name=name,
    )


def as_link(value: LinkSpec | str) -> LinkSpec:
    return value if isinstance(value, LinkSpec) else parse_link(value)
