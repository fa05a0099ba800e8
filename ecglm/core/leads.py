"""The 12 standard leads, in the order every array of this project uses."""

from __future__ import annotations

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
N_LEADS = len(LEADS)

_CANONICAL = {name.upper(): name for name in LEADS}


def canonical_lead(name: str) -> str:
    """Map a lead name as written in a WFDB header (``AVR``) or PTB-XL+ (``aVR``) to ``LEADS`` spelling.

    Raises ValueError for a name that is not one of the 12 standard leads.
    """
    key = name.strip().upper()
    if key not in _CANONICAL:
        raise ValueError(f"unknown lead name {name!r} (expected one of {', '.join(LEADS)})")
    return _CANONICAL[key]
